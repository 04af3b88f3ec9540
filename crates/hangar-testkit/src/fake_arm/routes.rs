//! From an HTTP request to a method on the state: the axum handler (request
//! log, injected faults, simulated boots after the lock), authentication,
//! api-version, and the routes ARM serves.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::compute::instance_view;
use super::faults::answer_before_serving;
use super::parse::{key_of, parse_query};
use super::reply::{ArmError, Reply, bad, fail, not_allowed, not_found, respond};
use super::state::Inner;
use super::{ArmKind, ArmRequest, FakeArm, IDENTITY_PATH};

#[derive(Debug)]
pub(super) enum Route {
    Item {
        kind: ArmKind,
        sub: String,
        rg: String,
        name: String,
    },
    InstanceView {
        sub: String,
        rg: String,
        name: String,
    },
    List {
        kind: ArmKind,
        sub: String,
        rg: Option<String>,
    },
    Resources {
        sub: String,
        rg: String,
    },
    ResourceGroup {
        sub: String,
        rg: String,
    },
    Operation {
        id: String,
        /// `Location` semantics (202 while running, then 200/204).
        location_style: bool,
    },
}

pub(super) fn parse_route(path: &str, monitor: bool) -> Option<Route> {
    let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let lc: Vec<String> = seg.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lc.iter().map(String::as_str).collect();
    let s = |i: usize| seg.get(i).map(|v| v.to_string()).unwrap_or_default();
    match l.as_slice() {
        ["subscriptions", _, "resourcegroups", _] => Some(Route::ResourceGroup {
            sub: s(1),
            rg: s(3),
        }),
        ["subscriptions", _, "resourcegroups", _, "resources"] => Some(Route::Resources {
            sub: s(1),
            rg: s(3),
        }),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ns,
            coll,
        ] => Some(Route::List {
            kind: ArmKind::parse(ns, coll)?,
            sub: s(1),
            rg: Some(s(3)),
        }),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            ns,
            coll,
            _,
        ] => Some(Route::Item {
            kind: ArmKind::parse(ns, coll)?,
            sub: s(1),
            rg: s(3),
            name: s(7),
        }),
        [
            "subscriptions",
            _,
            "resourcegroups",
            _,
            "providers",
            "microsoft.compute",
            "virtualmachines",
            _,
            "instanceview",
        ] => Some(Route::InstanceView {
            sub: s(1),
            rg: s(3),
            name: s(7),
        }),
        [
            "subscriptions",
            _,
            "providers",
            ns,
            "locations",
            _,
            what,
            id,
        ] if matches!(*ns, "microsoft.compute" | "microsoft.network")
            && matches!(*what, "operations" | "operationresults" | "diskoperations") =>
        {
            Some(Route::Operation {
                id: id.to_string(),
                location_style: *what == "operationresults" || monitor,
            })
        }
        ["subscriptions", _, "providers", ns, coll] => Some(Route::List {
            kind: ArmKind::parse(ns, coll)?,
            sub: s(1),
            rg: None,
        }),
        _ => None,
    }
}

/// A resource referenced by id from another resource's body.
pub(super) fn parse_ref(id: &str, want: ArmKind) -> Option<String> {
    match parse_route(id, false)? {
        Route::Item {
            kind,
            sub,
            rg,
            name,
        } if kind == want => Some(key_of(kind, &sub, &rg, &name)),
        _ => None,
    }
}

pub(super) struct Req<'a> {
    pub(super) method: &'a Method,
    pub(super) path: &'a str,
    pub(super) query: &'a str,
    pub(super) params: Vec<(String, String)>,
    pub(super) headers: &'a HeaderMap,
    pub(super) body: &'a [u8],
}

impl Req<'_> {
    pub(super) fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(super) fn json_object(&self) -> Result<Value, ArmError> {
        let v: Value = serde_json::from_slice(self.body).map_err(|e| {
            bad(
                "InvalidRequestContent",
                format!("The request content was invalid and could not be deserialized: {e}"),
            )
        })?;
        if !v.is_object() {
            return Err(bad(
                "InvalidRequestContent",
                "The request content must be a JSON object.",
            ));
        }
        Ok(v)
    }

    pub(super) fn create_only(&self) -> bool {
        self.header("if-none-match")
            .is_some_and(|v| v.trim() == "*")
    }
}

pub(super) async fn handle(
    State(arm): State<FakeArm>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let fault = {
        let mut s = arm.st();
        let recorded = if body.is_empty() {
            None
        } else {
            Some(
                serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned())),
            )
        };
        s.requests.push(ArmRequest {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: recorded,
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        s.take_fault(&method, &path, |f| !f.shapes_operation())
    };
    let early = answer_before_serving(fault).await;
    let resp = match early {
        Some(r) => r,
        None => {
            let req = Req {
                method: &method,
                path: &path,
                query: &query,
                params: parse_query(&query),
                headers: &headers,
                body: &body,
            };
            let (resp, boots) = {
                let mut s = arm.st();
                let resp = s.serve(&req).unwrap_or_else(IntoResponse::into_response);
                (resp, std::mem::take(&mut s.boots))
            };
            arm.start_boots(boots);
            resp
        }
    };
    arm.changed.notify_waiters();
    resp
}

pub(super) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Inner {
    pub(super) fn serve(&mut self, req: &Req<'_>) -> Reply {
        if req.path == IDENTITY_PATH {
            // A managed-identity token endpoint (`IDENTITY_ENDPOINT` style),
            // so a real hangard can be pointed at this fake.
            if req.header("x-identity-header").is_none() {
                return Err(bad(
                    "MissingIdentityHeader",
                    "X-IDENTITY-HEADER is required",
                ));
            }
            return Ok(respond(
                StatusCode::OK,
                Some(json!({
                    "access_token": self.token.clone().unwrap_or_else(|| "fake-arm-token".into()),
                    "expires_on": (now_unix() + 3600).to_string(),
                    "token_type": "Bearer"
                })),
                &[],
            ));
        }
        if let Some(token) = &self.token {
            let auth = req.header("authorization");
            let ok = auth
                .and_then(|a| a.split_once(' '))
                .is_some_and(|(scheme, t)| {
                    scheme.eq_ignore_ascii_case("bearer") && t.trim() == token
                });
            if !ok {
                let why = if auth.is_none() {
                    "Authentication failed. The 'Authorization' header is missing."
                } else {
                    "Authentication failed. The access token is not valid."
                };
                let mut r =
                    fail(StatusCode::UNAUTHORIZED, "AuthenticationFailed", why).into_response();
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static(
                        "Bearer authorization_uri=\"https://login.microsoftonline.com/common\", error=\"invalid_token\"",
                    ),
                );
                return Ok(r);
            }
        }
        if req.param("api-version").is_none_or(|v| v.trim().is_empty()) {
            return Err(bad(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            ));
        }
        let monitor = req
            .param("monitor")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let Some(route) = parse_route(req.path, monitor) else {
            return Err(bad(
                "InvalidResourceType",
                format!(
                    "The fake ARM has no resource type at {} {}.",
                    req.method, req.path
                ),
            ));
        };
        let m = req.method.clone();
        match route {
            Route::Item {
                kind,
                sub,
                rg,
                name,
            } => match (m, kind) {
                (Method::GET, _) => self.get_item(kind, &sub, &rg, &name, req),
                (Method::PUT, ArmKind::VirtualMachine) => self.put_vm(&sub, &rg, &name, req),
                (Method::PUT, ArmKind::NetworkInterface) => self.put_nic(&sub, &rg, &name, req),
                (Method::PUT, ArmKind::PublicIpAddress) => self.put_pip(&sub, &rg, &name, req),
                (Method::DELETE, _) => self.delete(kind, &sub, &rg, &name, req),
                (m, _) => Err(not_allowed(&m, kind.resource_type())),
            },
            Route::InstanceView { sub, rg, name } if m == Method::GET => {
                let key = key_of(ArmKind::VirtualMachine, &sub, &rg, &name);
                self.tick_resource(&key);
                let r = self
                    .res
                    .get(&key)
                    .ok_or_else(|| not_found(ArmKind::VirtualMachine, &name, &rg))?;
                Ok(respond(StatusCode::OK, Some(instance_view(r)), &[]))
            }
            Route::List { kind, sub, rg } if m == Method::GET => {
                self.list(kind, &sub, rg.as_deref(), req)
            }
            Route::Resources { sub, rg } if m == Method::GET => self.list_resources(&sub, &rg, req),
            // Every resource group exists (health checks read one).
            Route::ResourceGroup { sub, rg } if m == Method::GET => Ok(respond(
                StatusCode::OK,
                Some(json!({
                    "id": format!("/subscriptions/{sub}/resourceGroups/{rg}"),
                    "name": rg,
                    "type": "Microsoft.Resources/resourceGroups",
                    "location": "westeurope",
                    "properties": {"provisioningState": "Succeeded"}
                })),
                &[],
            )),
            Route::Operation { id, location_style } if m == Method::GET => {
                self.poll(&id, location_style, req)
            }
            _ => Err(not_allowed(req.method, req.path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_case_insensitively() {
        let r = parse_route(
            "/SUBSCRIPTIONS/s/resourcegroups/RG/Providers/microsoft.compute/VIRTUALMACHINES/vm1",
            false,
        );
        assert!(
            matches!(r, Some(Route::Item { kind: ArmKind::VirtualMachine, ref rg, ref name, .. }) if rg == "RG" && name == "vm1")
        );
        assert_eq!(
            parse_ref(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/N",
                ArmKind::NetworkInterface
            )
            .as_deref(),
            Some("/subscriptions/s/resourcegroups/rg/providers/microsoft.network/networkinterfaces/n")
        );
        assert!(
            parse_route(
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Foo/bars/x",
                false
            )
            .is_none()
        );
    }
}
