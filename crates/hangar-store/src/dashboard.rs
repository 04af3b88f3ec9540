//! The reads behind the web dashboard that the admin API has no query
//! for: queue depth and age per pool, queued → runner waits over a
//! window, recent failures, and jobs with their wait and run times,
//! filtered by repository and label. Read-only, on the reader pool.

use chrono::{DateTime, Utc};
use hangar_core::{InstanceName, InstanceStatus, Job, JobStatus, PoolId, RunnerStatus};

use crate::jobs::job_from_row;
use crate::{DbRow, Result, Store, corrupt, on, to_dt};

/// Jobs waiting for a runner in one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolQueue {
    pub pool_id: PoolId,
    pub queued: u32,
    pub oldest_queued_at: DateTime<Utc>,
}

/// One job's wait from `queued` to its runner taking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitSample {
    pub pool_id: Option<PoolId>,
    pub started_at: DateTime<Utc>,
    pub wait_ms: i64,
}

/// An instance that failed, or is failing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRow {
    pub name: InstanceName,
    pub pool_id: PoolId,
    pub status: InstanceStatus,
    pub runner_status: RunnerStatus,
    pub message: Option<String>,
    pub create_attempts: u32,
    pub delete_attempts: u32,
    pub at: DateTime<Utc>,
}

/// A job with the times the dashboard shows.
#[derive(Debug, Clone)]
pub struct JobTimes {
    pub job: Job,
    pub queued_at: DateTime<Utc>,
    /// When its runner took it (`None`: not yet, or not seen queued).
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which jobs to list. Text filters are case-insensitive; `repository`
/// matches part of `owner/name`, `label` one whole label.
#[derive(Debug, Clone, Default)]
pub struct JobTimesFilter {
    pub status: Option<JobStatus>,
    pub repository: Option<String>,
    pub label: Option<String>,
    pub limit: u32,
}

impl Store {
    /// Queued jobs per pool with the oldest one's queue time (jobs no pool
    /// matched are left out). A scale set's pool counts the runner requests
    /// of its queue that no runner has started yet.
    pub async fn pool_queues(&self) -> Result<Vec<PoolQueue>> {
        let sql = "SELECT pool_id, COUNT(*) AS n, MIN(queued_at) AS oldest FROM jobs
              WHERE status_rank <= 1 AND status = 'queued' AND pool_id IS NOT NULL
              GROUP BY pool_id
            UNION ALL
            SELECT s.pool_id, COUNT(*) AS n, MIN(COALESCE(j.queued_at, j.seen_at)) AS oldest
              FROM scale_set_jobs j JOIN scale_sets s ON s.id = j.scale_set_id
              WHERE j.status_rank <= 2
              GROUP BY s.pool_id";
        on!(self, read, |c| {
            let rows = sqlx::query(sql).fetch_all(c).await?;
            rows.iter()
                .map(|r| {
                    Ok(PoolQueue {
                        pool_id: r.get::<String, _>("pool_id").parse().map_err(corrupt)?,
                        queued: r.get::<i64, _>("n") as u32,
                        oldest_queued_at: to_dt(r.get("oldest")),
                    })
                })
                .collect()
        })
    }

    /// The waits of jobs whose runner took them at or after `since`,
    /// oldest first: webhook jobs and scale sets' jobs (queued at the
    /// service's queue time, else when Hangar first heard of them).
    pub async fn wait_samples(&self, since: DateTime<Utc>) -> Result<Vec<WaitSample>> {
        let sql = "SELECT pool_id, started_at, started_at - queued_at AS wait FROM jobs
              WHERE started_at >= $1
            UNION ALL
            SELECT s.pool_id, j.started_at, j.started_at - COALESCE(j.queued_at, j.seen_at) AS wait
              FROM scale_set_jobs j JOIN scale_sets s ON s.id = j.scale_set_id
              WHERE j.started_at >= $1
            ORDER BY started_at";
        on!(self, read, |c| {
            let rows = sqlx::query(sql)
                .bind(since.timestamp_millis())
                .fetch_all(c)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(WaitSample {
                        pool_id: r
                            .get::<Option<String>, _>("pool_id")
                            .map(|p| p.parse())
                            .transpose()
                            .map_err(corrupt)?,
                        started_at: to_dt(r.get("started_at")),
                        wait_ms: r.get::<i64, _>("wait").max(0),
                    })
                })
                .collect()
        })
    }

    /// Instances that failed (a create retried or waiting for its retry, a
    /// failed delete, a failed runner, a bootstrap timeout), newest first,
    /// deleted ones included. `create_attempts` counts every create, the
    /// one that worked too.
    pub async fn recent_failures(&self, limit: u32) -> Result<Vec<FailureRow>> {
        let sql = "SELECT name, pool_id, status, runner_status, status_message, create_attempts,
                    delete_attempts, updated_at FROM instances
              WHERE status = 'error' OR runner_status = 'failed' OR delete_attempts > 0
                 OR create_attempts > 1
                 OR (create_attempts > 0 AND status = 'pending_create')
                 OR status_message LIKE 'runner not up%'
              ORDER BY updated_at DESC LIMIT CAST($1 AS INTEGER)";
        on!(self, read, |c| {
            let rows = sqlx::query(sql).bind(i64::from(limit)).fetch_all(c).await?;
            rows.iter()
                .map(|r| {
                    Ok(FailureRow {
                        name: InstanceName::parse(r.get::<&str, _>("name")).map_err(corrupt)?,
                        pool_id: r.get::<String, _>("pool_id").parse().map_err(corrupt)?,
                        status: r.get::<String, _>("status").parse().map_err(corrupt)?,
                        runner_status: r
                            .get::<String, _>("runner_status")
                            .parse()
                            .map_err(corrupt)?,
                        message: r.get("status_message"),
                        create_attempts: r.get::<i64, _>("create_attempts") as u32,
                        delete_attempts: r.get::<i64, _>("delete_attempts") as u32,
                        at: to_dt(r.get("updated_at")),
                    })
                })
                .collect()
        })
    }

    /// Jobs with their queue, start and finish times, newest first.
    pub async fn jobs_with_times(&self, f: &JobTimesFilter) -> Result<Vec<JobTimes>> {
        // Where the dialects differ: the position of a substring, and the
        // elements of a JSON array (labels are stored as JSON text).
        let (find, labels) = match self.backend_name() {
            "postgres" => (
                "strpos",
                "json_array_elements_text(CAST(jobs.labels AS JSON)) AS l(value)",
            ),
            _ => ("instr", "json_each(jobs.labels)"),
        };
        on!(self, read, |c| {
            let mut q = sqlx::QueryBuilder::new("SELECT * FROM jobs WHERE 1 = 1");
            if let Some(s) = f.status {
                q.push(" AND status = ").push_bind(s.as_str());
            }
            if let Some(r) = f.repository.as_deref().filter(|r| !r.is_empty()) {
                q.push(format_args!(" AND {find}(lower(repository), lower("))
                    .push_bind(r.to_owned())
                    .push(")) > 0");
            }
            if let Some(l) = f.label.as_deref().filter(|l| !l.is_empty()) {
                q.push(format_args!(
                    " AND EXISTS (SELECT 1 FROM {labels} WHERE lower(value) = lower("
                ))
                .push_bind(l.to_owned())
                .push("))");
            }
            q.push(" ORDER BY updated_at DESC, id DESC LIMIT CAST(")
                .push_bind(i64::from(f.limit.max(1)))
                .push(" AS INTEGER)");
            let rows = q.build().fetch_all(c).await?;
            rows.iter()
                .map(|r| {
                    let job = job_from_row(r)?;
                    let finished_at =
                        (job.status == JobStatus::Completed).then_some(job.updated_at);
                    Ok(JobTimes {
                        queued_at: to_dt(r.get("queued_at")),
                        started_at: r.get::<Option<i64>, _>("started_at").map(to_dt),
                        finished_at,
                        job,
                    })
                })
                .collect()
        })
    }
}
