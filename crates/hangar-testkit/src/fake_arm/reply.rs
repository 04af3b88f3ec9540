//! ARM's answers: CloudError bodies with ARM's codes and messages, and the
//! headers every response carries.

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ArmKind;
use super::state::Res;

/// An ARM CloudError answer.
#[derive(Debug)]
pub(super) struct ArmError {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
}

pub(super) type Reply = Result<Response, ArmError>;

pub(super) fn fail(status: StatusCode, code: &str, message: impl Into<String>) -> ArmError {
    ArmError {
        status,
        code: code.to_owned(),
        message: message.into(),
    }
}

pub(super) fn bad(code: &str, message: impl Into<String>) -> ArmError {
    fail(StatusCode::BAD_REQUEST, code, message)
}

pub(super) fn invalid(message: impl Into<String>) -> ArmError {
    bad("InvalidParameter", message)
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        respond(self.status, Some(body), &[("x-ms-error-code", self.code)])
    }
}

pub(super) fn respond(
    status: StatusCode,
    body: Option<Value>,
    headers: &[(&'static str, String)],
) -> Response {
    let mut resp = match body {
        Some(b) => (status, axum::Json(b)).into_response(),
        None => status.into_response(),
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        h.insert("x-ms-request-id", v);
    }
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    resp
}

pub(super) fn not_found(kind: ArmKind, name: &str, rg: &str) -> ArmError {
    fail(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            kind.resource_type()
        ),
    )
}

pub(super) fn busy(r: &Res, verb: &str) -> ArmError {
    fail(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation '{verb}' is not allowed on '{}' since another operation is in progress (provisioningState {}).",
            r.id,
            r.state()
        ),
    )
}

pub(super) fn not_allowed(method: &Method, what: &str) -> ArmError {
    fail(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("The fake ARM does not support {method} on {what}."),
    )
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
