//! Scale set listeners: how jobs reach the engine from GitHub's runner scale
//! set message queues instead of webhooks.
//!
//! One [`ScaleSetListener`] per scale set that exists on GitHub and is
//! enabled, started and stopped by [`supervise`] as the store says (it
//! re-reads the scale sets every reconcile interval, and at once when
//! [`crate::Scheduler::scale_sets_changed`] is called). A listener holds a
//! message session, long-polls the queue, acquires the jobs it is offered
//! (all of them; the poll's max-capacity header bounds the offer), applies each message to the store
//! in one transaction and only then acknowledges it: a crash in between
//! redelivers the message, and the store ignores a message id it applied
//! already. What it applied wakes the pool, whose reconcile scales it to
//! the scale set's desired runners. It never creates or deletes a runner
//! itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hangar_core::{ForgeError, ForgeTarget, MessageSession, ScaleSetJobEvent, Secret};
use hangar_store::{AppliedMessage, ListenedScaleSet, StoreError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::Ctx;
use crate::{Scheduler, SchedulerError};

/// What one [`ScaleSetListener::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenStep {
    /// A message was applied (or found applied already) and acknowledged.
    Message {
        message_id: i64,
        /// Jobs acquired for it.
        acquired: usize,
        /// Whether this message had been applied before (a redelivery).
        redelivered: bool,
    },
    /// The long poll ended without a message.
    Empty,
    /// Something failed; wait this long before the next step.
    Backoff(Duration, String),
    /// The listener is done: the scale set is gone, disabled or deleted on
    /// GitHub.
    Stop(String),
}

/// One scale set's listener, steppable: [`Self::step`] is one session
/// check plus one long poll and what follows from it.
#[derive(Debug)]
pub struct ScaleSetListener {
    ctx: Arc<Ctx>,
    id: String,
    session: Option<MessageSession>,
    /// Consecutive failures (the backoff's exponent).
    failures: u32,
    /// Whether a session was opened before (a new one is a reconnect).
    connected_before: bool,
    /// Ends a long poll early (shutdown, the scale set disabled). Only the
    /// poll is cut short: every other call of a step runs to its end, so a
    /// session the service opened is always known, and closed, here.
    stop: CancellationToken,
}

impl ScaleSetListener {
    pub(crate) fn new(ctx: Arc<Ctx>, id: String) -> Self {
        Self {
            ctx,
            id,
            session: None,
            failures: 0,
            connected_before: false,
            stop: CancellationToken::new(),
        }
    }

    /// The session held now (tests).
    pub fn session(&self) -> Option<&MessageSession> {
        self.session.as_ref()
    }

    fn backoff(&mut self, why: String) -> ListenStep {
        self.failures = self.failures.saturating_add(1);
        ListenStep::Backoff(self.ctx.backoff(self.failures), why)
    }

    fn forge_backoff(&mut self, e: &ForgeError, what: &str) -> ListenStep {
        self.failures = self.failures.saturating_add(1);
        let wait = match e {
            ForgeError::RateLimited { retry_after, .. } => *retry_after,
            _ => self.ctx.backoff(self.failures),
        };
        ListenStep::Backoff(wait, format!("{what}: {e}"))
    }

    /// The session's owner name: this controller.
    fn owner(&self) -> String {
        format!("hangar-{}", self.ctx.store.controller_id())
    }

    /// One step: opens a session when none is held, polls once, and
    /// applies then acknowledges what came.
    #[tracing::instrument(skip_all, fields(scale_set.id = %self.id))]
    pub async fn step(&mut self) -> Result<ListenStep, SchedulerError> {
        let ctx = self.ctx.clone();
        let Some(actions) = ctx.github.actions().cloned() else {
            return Ok(ListenStep::Stop(
                "hangard has no Actions service client".into(),
            ));
        };
        let Some(ss) = ctx.store.listened_scale_set(&self.id).await? else {
            return Ok(ListenStep::Stop(
                "the scale set is gone or not on GitHub".into(),
            ));
        };
        if !ss.listening {
            return Ok(ListenStep::Stop(
                "the scale set is disabled or deleted on GitHub".into(),
            ));
        }
        // Several replicas: only the holder of the scale set's pool
        // listens, and every step runs under that pool's fence.
        let Ok(fence) = ctx.leases.fence(ss.pool_id) else {
            return Ok(ListenStep::Stop(
                "this replica does not hold the scale set's pool".into(),
            ));
        };
        match hangar_store::fenced(fence, self.held_step(ss, actions)).await {
            Err(SchedulerError::Store(StoreError::Fenced(why))) => {
                tracing::info!(reason = %why, "the scale set's pool moved to another replica; its listener stops");
                Ok(ListenStep::Stop(format!(
                    "the scale set's pool lease is gone: {why}"
                )))
            }
            r => r,
        }
    }

    /// [`Self::step`] under the pool's fence. The lease is asked before
    /// the first call and again before jobs are acquired (the long poll
    /// may have lasted past it); the message is applied in a transaction
    /// that checks it once more, and acknowledged only after. A stale
    /// listener so acquires nothing, applies nothing and acknowledges
    /// nothing: the message comes back to the pool's new holder.
    async fn held_step(
        &mut self,
        ss: ListenedScaleSet,
        actions: Arc<dyn hangar_core::ActionsService>,
    ) -> Result<ListenStep, SchedulerError> {
        let ctx = self.ctx.clone();
        ctx.check_fence().await?;
        let target = match ctx.github.target(ss.entity_id).await {
            Ok(t) => t,
            Err(e) => return Ok(self.backoff(format!("cannot load the entity: {e}"))),
        };
        if self.session.is_none()
            && let Some(stop) = self.open_session(&ss, &target).await?
        {
            return Ok(stop);
        }
        let session = self.session.clone().expect("a session is open");
        let capacity = ss.max_runners.saturating_sub(ss.busy_runners);
        let cred = target.credentials.name.to_string();
        let polled = tokio::select! {
            biased;
            () = self.stop.cancelled() => {
                return Ok(ListenStep::Stop("the listener was told to stop".into()));
            }
            r = ctx.github.queue_call(
                &cred,
                "scale_set_get_message",
                actions.get_message(&session, ss.last_message_id, capacity),
            ) => r,
        };
        let msg = match polled {
            Ok(None) => {
                self.failures = 0;
                return Ok(ListenStep::Empty);
            }
            Ok(Some(m)) => m,
            Err(ForgeError::Unauthorized(_)) => {
                // The queue token expired: renew it with the session.
                return Ok(match self.refresh(&target).await {
                    Ok(()) => ListenStep::Empty,
                    Err(step) => step,
                });
            }
            Err(e @ ForgeError::NotFound(_)) => {
                // The session is gone (expired on the service's side): the
                // next step opens a new one, which tells whether the scale
                // set itself is gone.
                self.session = None;
                return Ok(self.forge_backoff(&e, "the message session is gone"));
            }
            Err(e) => return Ok(self.forge_backoff(&e, "polling the message queue")),
        };

        let redelivered = msg.message_id <= ss.last_message_id;
        let mut acquired = Vec::new();
        if !redelivered {
            // Acquire every job offered, as GitHub's own listener does:
            // the poll's max-capacity header already bounds what the
            // service offers, and a job it offered but we left unacquired
            // is not promised to come back. Runners stay capped at
            // `max_runners`; an acquired job beyond them waits for one to
            // free. A failed acquire leaves the message unacknowledged, so
            // it comes back.
            let offered: Vec<i64> = msg
                .events
                .iter()
                .filter_map(|e| match e {
                    ScaleSetJobEvent::Available { job } => Some(job.runner_request_id),
                    _ => None,
                })
                .collect();
            if !offered.is_empty() {
                ctx.check_fence().await?;
                match ctx
                    .github
                    .listener_call(
                        &target,
                        "scale_set_acquire_jobs",
                        actions.acquire_jobs(&target, &session, &offered),
                    )
                    .await
                {
                    Ok(ids) => acquired = ids,
                    Err(ForgeError::Unauthorized(_)) => {
                        return Ok(match self.refresh(&target).await {
                            Ok(()) => ListenStep::Empty,
                            Err(step) => step,
                        });
                    }
                    Err(e) => return Ok(self.forge_backoff(&e, "acquiring jobs")),
                }
            }
            // Applied before it is acknowledged.
            match ctx
                .store
                .apply_scale_set_message(&self.id, &msg, &acquired)
                .await?
            {
                AppliedMessage::Applied {
                    pool_id,
                    desired_runners,
                    marked_active,
                    retired,
                } => {
                    ctx.metrics.scale_set_message(&self.id);
                    ctx.metrics
                        .scale_set_acquired(&self.id, acquired.len() as u64);
                    tracing::debug!(
                        message.id = msg.message_id,
                        events = msg.events.len(),
                        acquired = acquired.len(),
                        desired_runners,
                        marked_active,
                        retired,
                        "scale set message applied"
                    );
                    ctx.queue.wake(pool_id);
                }
                AppliedMessage::AlreadyApplied => {}
            }
        }
        let acked = ctx
            .github
            .queue_call(
                &cred,
                "scale_set_delete_message",
                actions.delete_message(&session, msg.message_id),
            )
            .await;
        match acked {
            Ok(()) => {}
            Err(ForgeError::Unauthorized(_)) => {
                // Applied already: a redelivery after the refresh is
                // harmless.
                if let Err(step) = self.refresh(&target).await {
                    return Ok(step);
                }
            }
            Err(e) => {
                tracing::warn!(message.id = msg.message_id, error = %e, "cannot acknowledge a scale set message; it will be redelivered")
            }
        }
        self.failures = 0;
        Ok(ListenStep::Message {
            message_id: msg.message_id,
            acquired: acquired.len(),
            redelivered,
        })
    }

    /// Opens a message session, closing first the one this controller
    /// recorded (a restart: the service would refuse a second one with 409
    /// until the old one expires). `Some` when the step ends here.
    async fn open_session(
        &mut self,
        ss: &ListenedScaleSet,
        target: &ForgeTarget,
    ) -> Result<Option<ListenStep>, SchedulerError> {
        let ctx = self.ctx.clone();
        let actions = ctx.github.actions().cloned().expect("checked by step");
        if let Some(stale) = &ss.session_id {
            let old = MessageSession {
                session_id: stale.clone(),
                owner_name: self.owner(),
                scale_set_id: ss.github_id,
                message_queue_url: String::new(),
                message_queue_access_token: Secret::new(String::new()),
                statistics: None,
            };
            match ctx
                .github
                .listener_call(
                    target,
                    "scale_set_delete_session",
                    actions.delete_session(target, &old),
                )
                .await
            {
                Ok(()) => {
                    tracing::info!(session.id = %stale, "closed the session left by an earlier run")
                }
                Err(e) => {
                    tracing::info!(session.id = %stale, error = %e, "cannot close the session left by an earlier run; it expires on the service's side")
                }
            }
            ctx.store.set_scale_set_session(&self.id, None).await?;
        }
        let owner = self.owner();
        match ctx
            .github
            .listener_call(
                target,
                "scale_set_create_session",
                actions.create_session(target, ss.github_id, &owner),
            )
            .await
        {
            Ok(session) => {
                // Held before anything else is awaited: a step cut short
                // (shutdown) must still close it.
                self.session = Some(session.clone());
                ctx.store
                    .set_scale_set_session(&self.id, Some(&session.session_id))
                    .await?;
                if let Some(stats) = &session.statistics {
                    ctx.store.set_scale_set_statistics(&self.id, stats).await?;
                    ctx.queue.wake(ss.pool_id);
                }
                let event = if self.connected_before {
                    "reconnected"
                } else {
                    "created"
                };
                ctx.metrics.scale_set_session(&self.id, event);
                tracing::info!(session.id = %session.session_id, event, "scale set message session open");
                self.connected_before = true;
                Ok(None)
            }
            Err(ForgeError::AlreadyExists(why)) => {
                // Another listener holds the session (or ours from before a
                // restart, until the service lets it expire): never two.
                ctx.metrics.scale_set_session(&self.id, "conflict");
                Ok(Some(self.backoff(format!(
                    "the scale set has a session already ({why}); waiting for it to end"
                ))))
            }
            Err(ForgeError::NotFound(why)) => {
                let msg = format!(
                    "the Actions service has no scale set {}: {why}",
                    ss.github_id
                );
                ctx.store
                    .mark_scale_set_deleted_on_github(&self.id, &msg)
                    .await?;
                ctx.metrics.scale_set_gone(&self.id);
                ctx.queue.wake(ss.pool_id);
                tracing::error!(scale_set.name = %ss.name, github_id = ss.github_id, "scale set deleted on GitHub; its listener stops");
                Ok(Some(ListenStep::Stop(msg)))
            }
            Err(e) => Ok(Some(self.forge_backoff(&e, "opening a message session"))),
        }
    }

    /// Renews the session (and its queue token); on failure the session is
    /// dropped, so the next step opens a new one.
    async fn refresh(&mut self, target: &ForgeTarget) -> Result<(), ListenStep> {
        let ctx = self.ctx.clone();
        let actions = ctx.github.actions().cloned().expect("checked by step");
        let Some(session) = self.session.clone() else {
            return Ok(());
        };
        match ctx
            .github
            .listener_call(
                target,
                "scale_set_refresh_session",
                actions.refresh_session(target, &session),
            )
            .await
        {
            Ok(s) => {
                ctx.metrics.scale_set_session(&self.id, "refreshed");
                tracing::debug!("scale set message session refreshed");
                self.session = Some(s);
                Ok(())
            }
            Err(e) => {
                self.session = None;
                Err(self.forge_backoff(&e, "refreshing the message session"))
            }
        }
    }

    /// Closes the session (shutdown, the scale set disabled).
    pub async fn close(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        let ctx = self.ctx.clone();
        let Some(actions) = ctx.github.actions().cloned() else {
            return;
        };
        let entity = match ctx.store.listened_scale_set(&self.id).await {
            Ok(Some(ss)) => ss.entity_id,
            _ => return,
        };
        let Ok(target) = ctx.github.target(entity).await else {
            return;
        };
        match ctx
            .github
            .listener_call(
                &target,
                "scale_set_delete_session",
                actions.delete_session(&target, &session),
            )
            .await
        {
            Ok(()) => {
                if let Err(e) = ctx
                    .store
                    .clear_scale_set_session(&self.id, &session.session_id)
                    .await
                {
                    tracing::warn!(error = %e, "cannot forget the closed session");
                }
                tracing::info!(scale_set.id = %self.id, "scale set message session closed");
            }
            Err(e) => {
                tracing::warn!(scale_set.id = %self.id, error = %e, "cannot close the message session; it expires on the service's side")
            }
        }
    }
}

/// Runs one listener until `cancel` or until it stops by itself, then
/// closes its session.
async fn run_listener(mut l: ScaleSetListener, cancel: CancellationToken) {
    l.stop = cancel.clone();
    loop {
        if cancel.is_cancelled() {
            break;
        }
        // Not raced against `cancel`: a step dropped half-way could lose a
        // session the service just opened. The step ends its long poll at
        // `cancel` itself.
        match l.step().await {
            Ok(ListenStep::Stop(why)) => {
                tracing::info!(scale_set.id = %l.id, reason = %why, "scale set listener stops");
                break;
            }
            Ok(ListenStep::Backoff(wait, why)) => {
                tracing::warn!(scale_set.id = %l.id, wait_ms = wait.as_millis() as u64, reason = %why, "scale set listener backing off");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                let wait = l.ctx.backoff(l.failures.saturating_add(1));
                l.failures = l.failures.saturating_add(1);
                tracing::error!(scale_set.id = %l.id, error = %e, "scale set listener failed");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    l.close().await;
}

/// Keeps one listener running per scale set that should have one, until
/// `cancel`; then stops them all, each closing its session.
pub(crate) async fn supervise(scheduler: Scheduler, cancel: CancellationToken) {
    let ctx = scheduler.ctx.clone();
    if ctx.github.actions().is_none() {
        return;
    }
    let mut running: HashMap<String, (CancellationToken, JoinHandle<()>)> = HashMap::new();
    // Listeners told to stop and still closing their session: a new one for
    // the same scale set starts only after the old one is done, so the two
    // never hold sessions at once.
    let mut stopping: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        match ctx.store.listened_scale_sets().await {
            Ok(sets) => {
                let wanted: HashMap<&str, &ListenedScaleSet> = sets
                    .iter()
                    .filter(|s| s.listening && ctx.leases.holds(s.pool_id))
                    .map(|s| (s.id.as_str(), s))
                    .collect();
                // Stop the unwanted and forget the finished.
                let unwanted: Vec<String> = running
                    .keys()
                    .filter(|id| !wanted.contains_key(id.as_str()))
                    .cloned()
                    .collect();
                for id in unwanted {
                    if let Some((stop, task)) = running.remove(&id) {
                        stop.cancel();
                        stopping.insert(id, task);
                    }
                }
                running.retain(|_, (_, task)| !task.is_finished());
                stopping.retain(|_, task| !task.is_finished());
                for id in wanted.keys() {
                    if running.contains_key(*id) {
                        continue;
                    }
                    if let Some(old) = stopping.remove(*id) {
                        let _ = old.await;
                    }
                    tracing::info!(scale_set.id = %id, "starting scale set listener");
                    let stop = cancel.child_token();
                    let l = ScaleSetListener::new(ctx.clone(), (*id).to_owned());
                    let task = tokio::spawn(run_listener(l, stop.clone()));
                    running.insert((*id).to_owned(), (stop, task));
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list scale sets"),
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = ctx.scale_sets_changed.notified() => {}
            () = tokio::time::sleep(ctx.config.reconcile_interval()) => {}
        }
    }
    for (_, (stop, task)) in running {
        stop.cancel();
        let _ = task.await;
    }
    for (_, task) in stopping {
        let _ = task.await;
    }
}
