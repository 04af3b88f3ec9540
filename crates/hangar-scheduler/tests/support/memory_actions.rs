//! [`MemoryActions`]: GitHub's runner scale set service (the Actions service
//! behind `actions/runner-registration`) kept in memory, as the listener
//! and the create/delete steps see it: one message session per scale set
//! (a second is refused, the service's 409), a queue token that expires
//! and is renewed with the session, a long poll that waits for a message
//! or gives up after the service's wait (202), messages that stay until
//! deleted and are delivered again until then, acquire → assigned →
//! started → completed with the counters the service sends, JIT runners
//! that leave after their job, a busy runner that cannot be removed, and
//! a scale set that can vanish (404).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hangar_core::forge::JitConfig;
use hangar_core::*;

/// How long a long poll waits before the service answers 202.
pub const POLL_WAIT: Duration = Duration::from_secs(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobState {
    Available,
    Acquired,
    Assigned,
    Running,
    Completed,
}

#[derive(Debug, Clone)]
struct ServiceJob {
    job: ScaleSetJob,
    state: JobState,
    runner: Option<(i64, String)>,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    owner: String,
    /// The queue token now valid for it.
    token: String,
}

#[derive(Debug, Default)]
struct ScaleSetState {
    name: String,
    deleted: bool,
    session: Option<Session>,
    /// Undeleted messages, by id.
    queue: BTreeMap<i64, ScaleSetMessage>,
    jobs: BTreeMap<i64, ServiceJob>,
}

#[derive(Debug, Default)]
struct State {
    next_id: i64,
    sets: HashMap<i64, ScaleSetState>,
    runners: BTreeMap<i64, ScaleSetRunner>,
    busy: HashSet<i64>,
    calls: HashMap<&'static str, u64>,
    /// `lastMessageId` of every poll, in order.
    polled_with: Vec<i64>,
    /// Failures to answer, per operation, before answering normally.
    faults: HashMap<&'static str, Vec<ForgeError>>,
}

#[derive(Debug, Default)]
pub struct MemoryActions {
    state: Mutex<State>,
    /// Wakes long polls when a message arrives.
    arrived: tokio::sync::Notify,
}

impl MemoryActions {
    fn enter(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, State>, ForgeError> {
        let mut s = self.state.lock().unwrap();
        *s.calls.entry(op).or_default() += 1;
        if let Some(list) = s.faults.get_mut(op)
            && !list.is_empty()
        {
            return Err(list.remove(0));
        }
        Ok(s)
    }

    fn next_id(s: &mut State) -> i64 {
        s.next_id += 1;
        s.next_id
    }

    pub fn calls(&self, op: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// The `lastMessageId` each poll was made with.
    pub fn polled_with(&self) -> Vec<i64> {
        self.state.lock().unwrap().polled_with.clone()
    }

    /// The next calls of `op` fail with these errors, in order.
    pub fn fail_next(&self, op: &'static str, errors: Vec<ForgeError>) {
        self.state
            .lock()
            .unwrap()
            .faults
            .entry(op)
            .or_default()
            .extend(errors);
    }

    /// A scale set as `create_scale_set` would make it; returns its id.
    pub fn add_scale_set(&self, name: &str) -> i64 {
        let mut s = self.state.lock().unwrap();
        let id = Self::next_id(&mut s);
        s.sets.insert(
            id,
            ScaleSetState {
                name: name.into(),
                ..Default::default()
            },
        );
        id
    }

    /// Someone deleted the scale set on GitHub: every call about it is 404.
    pub fn delete_scale_set_remotely(&self, id: i64) {
        let mut s = self.state.lock().unwrap();
        if let Some(set) = s.sets.get_mut(&id) {
            set.deleted = true;
            set.session = None;
        }
        drop(s);
        self.arrived.notify_waiters();
    }

    /// Another listener (another daemon) holds the scale set's session.
    pub fn hold_session(&self, id: i64, owner: &str) {
        let mut s = self.state.lock().unwrap();
        let sid = format!("session-{}", Self::next_id(&mut s));
        s.sets.get_mut(&id).unwrap().session = Some(Session {
            id: sid.clone(),
            owner: owner.into(),
            token: format!("{sid}-token"),
        });
    }

    /// The session expires on the service's side (its owner stopped
    /// refreshing it).
    pub fn expire_session(&self, id: i64) {
        self.state
            .lock()
            .unwrap()
            .sets
            .get_mut(&id)
            .unwrap()
            .session = None;
        self.arrived.notify_waiters();
    }

    /// The session's queue token expires (polls answer 401 until the
    /// session is refreshed).
    pub fn expire_queue_token(&self, id: i64) {
        let mut s = self.state.lock().unwrap();
        let n = Self::next_id(&mut s);
        if let Some(sess) = s.sets.get_mut(&id).unwrap().session.as_mut() {
            sess.token = format!("{}-token-{n}", sess.id);
        }
    }

    pub fn session_owner(&self, id: i64) -> Option<String> {
        self.state.lock().unwrap().sets[&id]
            .session
            .as_ref()
            .map(|s| s.owner.clone())
    }

    /// Messages not deleted yet.
    pub fn pending_messages(&self, id: i64) -> Vec<i64> {
        self.state.lock().unwrap().sets[&id]
            .queue
            .keys()
            .copied()
            .collect()
    }

    pub fn runners(&self) -> Vec<ScaleSetRunner> {
        self.state
            .lock()
            .unwrap()
            .runners
            .values()
            .cloned()
            .collect()
    }

    fn statistics(s: &State, set: &ScaleSetState, scale_set_id: i64) -> ScaleSetStatistics {
        let count =
            |st: &[JobState]| set.jobs.values().filter(|j| st.contains(&j.state)).count() as i64;
        let runners: Vec<&ScaleSetRunner> = s
            .runners
            .values()
            .filter(|r| r.scale_set_id == scale_set_id)
            .collect();
        let busy = runners.iter().filter(|r| s.busy.contains(&r.id)).count() as i64;
        ScaleSetStatistics {
            total_available_jobs: count(&[JobState::Available]),
            total_acquired_jobs: count(&[JobState::Acquired]),
            total_assigned_jobs: count(&[JobState::Assigned, JobState::Running]),
            total_running_jobs: count(&[JobState::Running]),
            total_registered_runners: runners.len() as i64,
            total_busy_runners: busy,
            total_idle_runners: runners.len() as i64 - busy,
        }
    }

    /// Queues a message of these events with the counters as they are now.
    fn push(&self, s: &mut State, scale_set_id: i64, events: Vec<ScaleSetJobEvent>) -> i64 {
        let id = Self::next_id(s);
        let stats = Self::statistics(s, &s.sets[&scale_set_id], scale_set_id);
        s.sets.get_mut(&scale_set_id).unwrap().queue.insert(
            id,
            ScaleSetMessage {
                message_id: id,
                statistics: Some(stats),
                events,
            },
        );
        self.arrived.notify_waiters();
        id
    }

    /// A workflow job with `runs-on: <scale set name>` is queued: the
    /// service offers it (JobAvailable). Returns its runner request id.
    pub fn queue_job(&self, scale_set_id: i64) -> i64 {
        let mut s = self.state.lock().unwrap();
        let rid = Self::next_id(&mut s);
        let name = s.sets[&scale_set_id].name.clone();
        let job = ScaleSetJob {
            runner_request_id: rid,
            repository: "octo/app".into(),
            job_id: format!("job-{rid}"),
            job_display_name: Some("build".into()),
            workflow_run_id: Some(1),
            request_labels: vec![name],
            queue_time: None,
        };
        s.sets.get_mut(&scale_set_id).unwrap().jobs.insert(
            rid,
            ServiceJob {
                job: job.clone(),
                state: JobState::Available,
                runner: None,
            },
        );
        self.push(
            &mut s,
            scale_set_id,
            vec![ScaleSetJobEvent::Available { job }],
        );
        rid
    }

    /// The runner leaves the service behind Hangar's back (an admin removed
    /// it, or the service dropped it): `false` when there is no idle one
    /// by that name. A job assigned to the scale set stays assigned to the
    /// scale set, for whichever of its runners comes next.
    pub fn drop_runner(&self, name: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(id) = s.runners.values().find(|r| r.name == name).map(|r| r.id) else {
            return false;
        };
        if s.busy.contains(&id) {
            return false;
        }
        s.runners.remove(&id);
        true
    }

    /// The runner named `runner` takes the oldest job assigned to its scale
    /// set (JobStarted). `false` when there is none to take.
    pub fn start_job(&self, runner: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(r) = s.runners.values().find(|r| r.name == runner).cloned() else {
            return false;
        };
        let set = s.sets.get_mut(&r.scale_set_id).unwrap();
        let Some(j) = set
            .jobs
            .values_mut()
            .find(|j| j.state == JobState::Assigned)
        else {
            return false;
        };
        j.state = JobState::Running;
        j.runner = Some((r.id, r.name.clone()));
        let job = j.job.clone();
        s.busy.insert(r.id);
        self.push(
            &mut s,
            r.scale_set_id,
            vec![ScaleSetJobEvent::Started {
                job,
                runner_id: r.id,
                runner_name: r.name,
            }],
        );
        true
    }

    /// The job the runner runs completes (JobCompleted); the ephemeral
    /// runner leaves the service.
    pub fn complete_job(&self, runner: &str) -> bool {
        let mut s = self.state.lock().unwrap();
        let Some(r) = s.runners.values().find(|r| r.name == runner).cloned() else {
            return false;
        };
        let set = s.sets.get_mut(&r.scale_set_id).unwrap();
        let Some(j) = set
            .jobs
            .values_mut()
            .find(|j| j.runner.as_ref().is_some_and(|(id, _)| *id == r.id))
        else {
            return false;
        };
        j.state = JobState::Completed;
        let job = j.job.clone();
        s.busy.remove(&r.id);
        s.runners.remove(&r.id);
        self.push(
            &mut s,
            r.scale_set_id,
            vec![ScaleSetJobEvent::Completed {
                job,
                result: "succeeded".into(),
                runner_id: r.id,
                runner_name: r.name,
            }],
        );
        true
    }

    fn check_set(s: &State, id: i64) -> Result<(), ForgeError> {
        match s.sets.get(&id) {
            Some(set) if !set.deleted => Ok(()),
            _ => Err(ForgeError::NotFound(format!("runner scale set {id}"))),
        }
    }

    /// The session's scale set when `session` is its current session with
    /// a valid token.
    fn check_session(s: &State, session: &MessageSession) -> Result<(), ForgeError> {
        let Some(set) = s.sets.get(&session.scale_set_id).filter(|x| !x.deleted) else {
            return Err(ForgeError::NotFound("message queue".into()));
        };
        match &set.session {
            Some(cur) if cur.id == session.session_id => {
                if cur.token == session.message_queue_access_token.expose() {
                    Ok(())
                } else {
                    Err(ForgeError::Unauthorized("queue token expired".into()))
                }
            }
            _ => Err(ForgeError::NotFound(format!(
                "session {}",
                session.session_id
            ))),
        }
    }

    fn session_of(s: &State, scale_set_id: i64, sess: &Session) -> MessageSession {
        let set = &s.sets[&scale_set_id];
        MessageSession {
            session_id: sess.id.clone(),
            owner_name: sess.owner.clone(),
            scale_set_id,
            message_queue_url: format!("memory://queue/{scale_set_id}"),
            message_queue_access_token: Secret::new(sess.token.clone()),
            statistics: Some(Self::statistics(s, set, scale_set_id)),
        }
    }
}

#[async_trait]
impl ActionsService for MemoryActions {
    async fn runner_group_id(
        &self,
        _target: &ForgeTarget,
        _name: Option<&str>,
    ) -> Result<i64, ForgeError> {
        drop(self.enter("runner_group_id")?);
        Ok(1)
    }

    async fn find_scale_set(
        &self,
        _target: &ForgeTarget,
        runner_group_id: i64,
        name: &str,
    ) -> Result<Option<RemoteScaleSet>, ForgeError> {
        let s = self.enter("find_scale_set")?;
        Ok(s.sets
            .iter()
            .find(|(_, x)| !x.deleted && x.name == name)
            .map(|(id, x)| RemoteScaleSet {
                id: *id,
                name: x.name.clone(),
                runner_group_id,
                runner_group_name: None,
                labels: vec![x.name.clone()],
                disable_update: false,
            }))
    }

    async fn get_scale_set(
        &self,
        _target: &ForgeTarget,
        scale_set_id: i64,
    ) -> Result<Option<RemoteScaleSet>, ForgeError> {
        let s = self.enter("get_scale_set")?;
        Ok(s.sets
            .get(&scale_set_id)
            .filter(|x| !x.deleted)
            .map(|x| RemoteScaleSet {
                id: scale_set_id,
                name: x.name.clone(),
                runner_group_id: 1,
                runner_group_name: None,
                labels: vec![x.name.clone()],
                disable_update: false,
            }))
    }

    async fn create_scale_set(
        &self,
        _target: &ForgeTarget,
        req: &ScaleSetRequest,
    ) -> Result<RemoteScaleSet, ForgeError> {
        drop(self.enter("create_scale_set")?);
        let id = self.add_scale_set(&req.name);
        Ok(RemoteScaleSet {
            id,
            name: req.name.clone(),
            runner_group_id: req.runner_group_id,
            runner_group_name: None,
            labels: vec![req.name.clone()],
            disable_update: req.disable_update,
        })
    }

    async fn update_scale_set(
        &self,
        _target: &ForgeTarget,
        scale_set_id: i64,
        req: &ScaleSetRequest,
    ) -> Result<RemoteScaleSet, ForgeError> {
        let mut s = self.enter("update_scale_set")?;
        Self::check_set(&s, scale_set_id)?;
        s.sets.get_mut(&scale_set_id).unwrap().name = req.name.clone();
        Ok(RemoteScaleSet {
            id: scale_set_id,
            name: req.name.clone(),
            runner_group_id: req.runner_group_id,
            runner_group_name: None,
            labels: vec![req.name.clone()],
            disable_update: req.disable_update,
        })
    }

    async fn delete_scale_set(
        &self,
        _target: &ForgeTarget,
        scale_set_id: i64,
    ) -> Result<(), ForgeError> {
        drop(self.enter("delete_scale_set")?);
        self.delete_scale_set_remotely(scale_set_id);
        Ok(())
    }

    async fn create_session(
        &self,
        _target: &ForgeTarget,
        scale_set_id: i64,
        owner_name: &str,
    ) -> Result<MessageSession, ForgeError> {
        let mut s = self.enter("create_session")?;
        Self::check_set(&s, scale_set_id)?;
        if let Some(cur) = &s.sets[&scale_set_id].session {
            return Err(ForgeError::AlreadyExists(format!(
                "409: the scale set has a session owned by {}",
                cur.owner
            )));
        }
        let n = Self::next_id(&mut s);
        let sess = Session {
            id: format!("session-{n}"),
            owner: owner_name.into(),
            token: format!("session-{n}-token"),
        };
        s.sets.get_mut(&scale_set_id).unwrap().session = Some(sess.clone());
        Ok(Self::session_of(&s, scale_set_id, &sess))
    }

    async fn refresh_session(
        &self,
        _target: &ForgeTarget,
        session: &MessageSession,
    ) -> Result<MessageSession, ForgeError> {
        let mut s = self.enter("refresh_session")?;
        Self::check_set(&s, session.scale_set_id)?;
        let n = Self::next_id(&mut s);
        let set = s.sets.get_mut(&session.scale_set_id).unwrap();
        let Some(cur) = set.session.as_mut().filter(|c| c.id == session.session_id) else {
            return Err(ForgeError::NotFound(format!(
                "session {}",
                session.session_id
            )));
        };
        cur.token = format!("{}-token-{n}", cur.id);
        let cur = cur.clone();
        Ok(Self::session_of(&s, session.scale_set_id, &cur))
    }

    async fn delete_session(
        &self,
        _target: &ForgeTarget,
        session: &MessageSession,
    ) -> Result<(), ForgeError> {
        let mut s = self.enter("delete_session")?;
        if let Some(set) = s.sets.get_mut(&session.scale_set_id)
            && set
                .session
                .as_ref()
                .is_some_and(|c| c.id == session.session_id)
        {
            set.session = None;
        }
        Ok(())
    }

    async fn get_message(
        &self,
        session: &MessageSession,
        last_message_id: i64,
        _max_capacity: u32,
    ) -> Result<Option<ScaleSetMessage>, ForgeError> {
        let deadline = tokio::time::Instant::now() + POLL_WAIT;
        {
            let mut s = self.enter("get_message")?;
            s.polled_with.push(last_message_id);
        }
        loop {
            let arrived = self.arrived.notified();
            {
                let s = self.state.lock().unwrap();
                Self::check_session(&s, session)?;
                // The oldest message not deleted yet: one delivered before
                // but never acknowledged comes again.
                if let Some(m) = s.sets[&session.scale_set_id].queue.values().next() {
                    return Ok(Some(m.clone()));
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn delete_message(
        &self,
        session: &MessageSession,
        message_id: i64,
    ) -> Result<(), ForgeError> {
        let mut s = self.enter("delete_message")?;
        Self::check_session(&s, session)?;
        s.sets
            .get_mut(&session.scale_set_id)
            .unwrap()
            .queue
            .remove(&message_id);
        Ok(())
    }

    async fn acquire_jobs(
        &self,
        _target: &ForgeTarget,
        session: &MessageSession,
        runner_request_ids: &[i64],
    ) -> Result<Vec<i64>, ForgeError> {
        let mut s = self.enter("acquire_jobs")?;
        Self::check_session(&s, session)?;
        let sid = session.scale_set_id;
        let set = s.sets.get_mut(&sid).unwrap();
        let mut got = Vec::new();
        for id in runner_request_ids {
            if let Some(j) = set.jobs.get_mut(id)
                && j.state == JobState::Available
            {
                j.state = JobState::Acquired;
                got.push(*id);
            }
        }
        // The service assigns what was acquired to the scale set, and says
        // so in a message of its own.
        let mut events = Vec::new();
        for id in &got {
            let j = set.jobs.get_mut(id).unwrap();
            j.state = JobState::Assigned;
            events.push(ScaleSetJobEvent::Assigned { job: j.job.clone() });
        }
        if !events.is_empty() {
            self.push(&mut s, sid, events);
        }
        Ok(got)
    }

    async fn generate_jit_config(
        &self,
        _target: &ForgeTarget,
        scale_set_id: i64,
        runner_name: &str,
        _work_folder: &str,
    ) -> Result<JitConfig, ForgeError> {
        let mut s = self.enter("generate_jit_config")?;
        Self::check_set(&s, scale_set_id)?;
        if s.runners.values().any(|r| r.name == runner_name) {
            return Err(ForgeError::AlreadyExists(format!(
                "a runner named {runner_name} exists"
            )));
        }
        let id = Self::next_id(&mut s);
        s.runners.insert(
            id,
            ScaleSetRunner {
                id,
                name: runner_name.into(),
                scale_set_id,
            },
        );
        Ok(JitConfig {
            runner_id: id,
            runner_name: runner_name.into(),
            encoded_jit_config: Secret::new(format!("scale-set-jit-{id}")),
        })
    }

    async fn get_runner_by_name(
        &self,
        _target: &ForgeTarget,
        name: &str,
    ) -> Result<Option<ScaleSetRunner>, ForgeError> {
        let s = self.enter("get_runner_by_name")?;
        Ok(s.runners.values().find(|r| r.name == name).cloned())
    }

    async fn delete_runner(&self, _target: &ForgeTarget, runner_id: i64) -> Result<(), ForgeError> {
        let mut s = self.enter("delete_runner")?;
        if s.busy.contains(&runner_id) {
            return Err(ForgeError::Busy(format!("runner {runner_id} runs a job")));
        }
        s.runners.remove(&runner_id);
        Ok(())
    }
}

/// The shared handle tests keep.
pub fn memory_actions() -> Arc<MemoryActions> {
    Arc::new(MemoryActions::default())
}
