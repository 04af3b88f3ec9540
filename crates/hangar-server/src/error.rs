//! One error type for every handler: a status, a message and details,
//! rendered as `{"error": "...", "details": "..."}`. Server faults are
//! logged once, here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hangar_api::ErrorBody;
use hangar_store::StoreError;

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

impl From<hangar_scheduler::SchedulerError> for ApiError {
    fn from(e: hangar_scheduler::SchedulerError) -> Self {
        use hangar_scheduler::SchedulerError as E;
        match e {
            E::Store(s) => s.into(),
            E::Busy(m) => ApiError::conflict(m),
            E::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hangard is shutting down; try again",
            ),
            E::Invalid(m) => ApiError::bad_request(m),
        }
    }
}

/// A delivery that was not recorded gets a 5xx, so GitHub redelivers it.
impl From<hangar_scheduler::IntakeError> for ApiError {
    fn from(e: hangar_scheduler::IntakeError) -> Self {
        use hangar_scheduler::IntakeError as E;
        match e {
            E::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "hangard is shutting down; the delivery was not recorded",
            ),
            E::Commit(e) => {
                ApiError::internal("cannot record the delivery").with_details(e.to_string())
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
