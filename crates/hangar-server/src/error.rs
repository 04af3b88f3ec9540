//! One error type for every handler: a status, a message and details,
//! rendered as `{"error": "...", "details": "..."}`. Server faults are
//! logged once, here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hangar_api::ErrorBody;
use hangar_scheduler::SchedulerError;
use hangar_store::StoreError;

use hangar_scheduler::IntakeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub details: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = Some(details.into());
        self
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, msg)
    }

    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }

    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, msg)
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), error = %self.error, details = ?self.details, "request failed");
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.error,
                details: self.details,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Transition(t) => ApiError::conflict(t.to_string()),
            other => ApiError::internal("database error").with_details(other.to_string()),
        }
    }
}

impl From<SchedulerError> for ApiError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Store(s) => s.into(),
            SchedulerError::Busy(m) => ApiError::conflict(m),
            e @ SchedulerError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            SchedulerError::Invalid(m) => ApiError::bad_request(m),
        }
    }
}

/// GitHub redelivers on a 5xx, so both failures answer one.
impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "cannot record the job")
                    .with_details(e.to_string())
            }
            IntakeError::Commit(e) => {
                ApiError::internal("database error").with_details(e.to_string())
            }
        }
    }
}

/// A JSON body extractor whose rejections use [`ApiError`]'s shape.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rej) => {
                Err(ApiError::new(rej.status(), "invalid request body")
                    .with_details(rej.body_text()))
            }
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_errors_map_to_what_the_caller_can_do() {
        let status = |e: SchedulerError| ApiError::from(e).status;
        assert_eq!(
            status(SchedulerError::Busy("later".into())),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(SchedulerError::ShuttingDown),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(SchedulerError::Invalid("name".into())),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(SchedulerError::Store(StoreError::NotFound(
                "instance".into()
            ))),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn intake_failures_answer_5xx_so_github_redelivers() {
        assert_eq!(
            ApiError::from(IntakeError::ShuttingDown).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        let commit = ApiError::from(IntakeError::Commit(std::sync::Arc::new(
            StoreError::Invalid("disk full".into()),
        )));
        assert_eq!(commit.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(commit.error, "database error");
    }
}
