//! Fault injection: which request a fault matches, and the answer it gets
//! instead of (or before) the real one.

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ArmFault;
use super::reply::fail;
use super::routes::Req;
use super::state::Inner;

#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub(super) method: Option<Method>,
    pub(super) path_contains: String,
    pub(super) remaining: u32,
    pub(super) fault: ArmFault,
}

impl ArmFault {
    /// Faults that shape the operation a write starts, rather than the answer.
    pub(super) fn shapes_operation(&self) -> bool {
        matches!(
            self,
            ArmFault::ProvisioningFailed { .. } | ArmFault::NeverFinish
        )
    }
}

impl Inner {
    pub(super) fn take_fault(
        &mut self,
        method: &Method,
        path: &str,
        applies: impl Fn(&ArmFault) -> bool,
    ) -> Option<ArmFault> {
        let path = path.to_ascii_lowercase();
        let f = self.faults.iter_mut().find(|f| {
            f.remaining > 0
                && applies(&f.fault)
                && f.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&f.path_contains)
        })?;
        f.remaining -= 1;
        Some(f.fault.clone())
    }

    /// The fault that shapes the operation a PUT or DELETE is starting.
    pub(super) fn operation_fault(&mut self, req: &Req<'_>) -> Option<ArmFault> {
        let is_put = *req.method == Method::PUT;
        self.take_fault(req.method, req.path, |f| match f {
            ArmFault::ProvisioningFailed { .. } => is_put,
            ArmFault::NeverFinish => true,
            _ => false,
        })
    }
}

/// What an injected fault answers instead of the real response (`None`:
/// serve normally — after the delay, for `Latency`; faults that shape an
/// operation act later, in [`Inner::operation_fault`]).
pub(super) async fn answer_before_serving(fault: Option<ArmFault>) -> Option<Response> {
    match fault {
        Some(ArmFault::Latency(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(ArmFault::Status { status, code }) => Some(
            fail(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &code,
                "Injected fault.",
            )
            .into_response(),
        ),
        Some(ArmFault::TooManyRequests { retry_after_secs }) => {
            let mut r = fail(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "The request is being throttled.",
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert("retry-after", v);
            }
            Some(r)
        }
        Some(ArmFault::Conflict) => Some(
            fail(
                StatusCode::CONFLICT,
                "Conflict",
                "Injected conflict: another operation is in progress.",
            )
            .into_response(),
        ),
        Some(ArmFault::ProvisioningFailed { .. } | ArmFault::NeverFinish) | None => None,
    }
}
