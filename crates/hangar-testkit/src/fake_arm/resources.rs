//! What every resource kind shares: GET of one item, lists with `nextLink`
//! paging, the tag-filtered generic resource list, the checks every PUT
//! makes first, and DELETE with the in-use rules for NICs, IPs and disks.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::ArmKind;
use super::compute::instance_view;
use super::operations::OpWhat;
use super::parse::{check_name, key_of, parse_tags, pct_decode, require_location, set_path};
use super::reply::{ArmError, Reply, bad, busy, fail, invalid, not_found, respond};
use super::routes::Req;
use super::state::Inner;

/// The parts of a PUT request every resource kind needs.
pub(super) struct PutStart {
    pub(super) key: String,
    pub(super) body: Value,
    pub(super) location: String,
    pub(super) tags: BTreeMap<String, String>,
}

/// `tagName eq 'k'` or `tagName eq 'k' and tagValue eq 'v'` (OData quoting,
/// `''` for a quote) → (name, value).
pub(super) fn parse_tag_filter(filter: &str) -> Option<(String, Option<String>)> {
    let mut tokens: Vec<(bool, String)> = Vec::new();
    let mut chars = filter.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next()? {
                    '\'' if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push('\'');
                    }
                    '\'' => break,
                    c => s.push(c),
                }
            }
            tokens.push((true, s));
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '\'' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            tokens.push((false, s.to_ascii_lowercase()));
        }
    }
    let word = |t: &(bool, String), w: &str| !t.0 && t.1 == w;
    match tokens.as_slice() {
        [a, b, (true, k)] if word(a, "tagname") && word(b, "eq") => Some((k.clone(), None)),
        [a, b, (true, k), c, d, e, (true, v)]
            if word(a, "tagname")
                && word(b, "eq")
                && word(c, "and")
                && word(d, "tagvalue")
                && word(e, "eq") =>
        {
            Some((k.clone(), Some(v.clone())))
        }
        _ => None,
    }
}

impl Inner {
    pub(super) fn get_item(
        &mut self,
        kind: ArmKind,
        sub: &str,
        rg: &str,
        name: &str,
        req: &Req<'_>,
    ) -> Reply {
        let key = key_of(kind, sub, rg, name);
        self.tick_resource(&key);
        let r = self
            .res
            .get(&key)
            .ok_or_else(|| not_found(kind, name, rg))?;
        let mut body = r.body.clone();
        if kind == ArmKind::VirtualMachine
            && let Some(expand) = req.param("$expand")
        {
            let expand = expand.to_ascii_lowercase();
            if expand.contains("instanceview") {
                set_path(&mut body, &["properties", "instanceView"], instance_view(r));
            }
            if expand.contains("userdata")
                && let Some(ud) = r.vm.as_ref().and_then(|x| x.user_data.clone())
            {
                set_path(&mut body, &["properties", "userData"], json!(ud));
            }
        }
        Ok(respond(StatusCode::OK, Some(body), &[]))
    }

    pub(super) fn list(&self, kind: ArmKind, sub: &str, rg: Option<&str>, req: &Req<'_>) -> Reply {
        let mut vmss_filter = false;
        if let Some(f) = req.param("$filter") {
            if kind == ArmKind::VirtualMachine
                && f.to_ascii_lowercase().contains("virtualmachinescaleset/id")
            {
                vmss_filter = true;
            } else {
                return Err(invalid(format!(
                    "The $filter '{f}' is not supported on this list (compute lists filter only by 'virtualMachineScaleSet/id'; filter by tag with …/resources)."
                )));
            }
        }
        let items = self
            .res
            .iter()
            .filter(|(_, r)| {
                !vmss_filter
                    && r.kind == kind
                    && r.sub.eq_ignore_ascii_case(sub)
                    && rg.is_none_or(|g| r.rg.eq_ignore_ascii_case(g))
            })
            .map(|(k, r)| (k.clone(), r.body.clone()))
            .collect();
        self.paged(items, req)
    }

    pub(super) fn list_resources(&self, sub: &str, rg: &str, req: &Req<'_>) -> Reply {
        let filter = match req.param("$filter") {
            None => None,
            Some(f) => Some(parse_tag_filter(f).ok_or_else(|| {
                bad(
                    "InvalidFilterInQueryString",
                    format!(
                        "The fake ARM supports only \"tagName eq 'k'\" and \"tagName eq 'k' and tagValue eq 'v'\", not '{f}'."
                    ),
                )
            })?),
        };
        let items = self
            .res
            .iter()
            .filter(|(_, r)| r.sub.eq_ignore_ascii_case(sub) && r.rg.eq_ignore_ascii_case(rg))
            .filter(|(_, r)| {
                filter.as_ref().is_none_or(|(name, value)| {
                    r.tags.iter().any(|(k, v)| {
                        k.eq_ignore_ascii_case(name) && value.as_ref().is_none_or(|want| v == want)
                    })
                })
            })
            .map(|(k, r)| {
                let mut item = json!({
                    "id": r.id,
                    "name": r.name,
                    "type": r.kind.resource_type(),
                    "location": r.location,
                });
                // Per the spec, tags are not returned when filtering by tag.
                if filter.is_none() && !r.tags.is_empty() {
                    item["tags"] = json!(r.tags);
                }
                if let Some(by) = r.body.get("managedBy") {
                    item["managedBy"] = by.clone();
                }
                (k.clone(), item)
            })
            .collect();
        self.paged(items, req)
    }

    /// One page of `items` (sorted by key) after `$skiptoken`.
    pub(super) fn paged(&self, items: Vec<(String, Value)>, req: &Req<'_>) -> Reply {
        let after = match req.param("$skiptoken") {
            None => None,
            Some(t) => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid(format!("The $skiptoken '{t}' is not valid.")))?,
            ),
        };
        let mut rest: Vec<(String, Value)> = items
            .into_iter()
            .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
            .collect();
        let more = rest.len() > self.page_size;
        rest.truncate(self.page_size);
        let mut out = json!({});
        if more && let Some((last, _)) = rest.last() {
            let kept: Vec<&str> = req
                .query
                .split('&')
                .filter(|kv| {
                    let k = kv.split('=').next().unwrap_or("");
                    !kv.is_empty() && !pct_decode(k).eq_ignore_ascii_case("$skiptoken")
                })
                .collect();
            out["nextLink"] = json!(format!(
                "{}{}?{}&$skiptoken={}",
                self.url,
                req.path,
                kept.join("&"),
                hex::encode(last)
            ));
        }
        out["value"] = Value::Array(rest.into_iter().map(|(_, v)| v).collect());
        Ok(respond(StatusCode::OK, Some(out), &[]))
    }

    /// The checks every PUT makes against the existing resource.
    /// What every PUT checks and reads first: preconditions, a JSON
    /// object body, its location and its tags.
    pub(super) fn put_start(
        &self,
        kind: ArmKind,
        sub: &str,
        rg: &str,
        name: &str,
        req: &Req<'_>,
    ) -> Result<PutStart, ArmError> {
        let key = key_of(kind, sub, rg, name);
        self.put_preconditions(kind, &key, name, req)?;
        let body = req.json_object()?;
        let location = require_location(&body)?;
        let tags = parse_tags(&body)?;
        Ok(PutStart {
            key,
            body,
            location,
            tags,
        })
    }

    pub(super) fn put_preconditions(
        &self,
        kind: ArmKind,
        key: &str,
        name: &str,
        req: &Req<'_>,
    ) -> Result<(), ArmError> {
        check_name(kind, name)?;
        if let Some(r) = self.res.get(key) {
            if req.create_only() {
                return Err(fail(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    format!("The resource '{}' already exists (If-None-Match: *).", r.id),
                ));
            }
            if r.busy.is_some() {
                return Err(busy(r, "PUT"));
            }
        }
        Ok(())
    }

    pub(super) fn delete(
        &mut self,
        kind: ArmKind,
        sub: &str,
        rg: &str,
        name: &str,
        req: &Req<'_>,
    ) -> Reply {
        let key = key_of(kind, sub, rg, name);
        let Some(r) = self.res.get(&key) else {
            return Ok(respond(StatusCode::NO_CONTENT, None, &[]));
        };
        if r.busy.is_some() {
            return Err(busy(r, "DELETE"));
        }
        let attached = r
            .attached_to
            .as_ref()
            .and_then(|k| self.res.get(k))
            .map(|vm| vm.id.clone());
        match kind {
            ArmKind::NetworkInterface => {
                if let Some(vm) = attached {
                    return Err(bad(
                        "NicInUse",
                        format!(
                            "Network Interface {} is used by existing resource {vm}. In order to delete the network interface, it must be dissociated from the resource.",
                            r.id
                        ),
                    ));
                }
            }
            ArmKind::PublicIpAddress => {
                if let Some(cfg) = r.body["properties"]["ipConfiguration"]["id"].as_str() {
                    let lc = cfg.to_ascii_lowercase();
                    let in_use = self.res.values().any(|n| {
                        n.kind == ArmKind::NetworkInterface
                            && lc.starts_with(&format!("{}/", n.id.to_ascii_lowercase()))
                    });
                    if in_use {
                        return Err(bad(
                            "PublicIPAddressInUse",
                            format!(
                                "Public IP address {} can not be deleted since it is still allocated to resource {cfg}.",
                                r.id
                            ),
                        ));
                    }
                }
            }
            ArmKind::Disk => {
                if let Some(vm) = attached {
                    return Err(fail(
                        StatusCode::CONFLICT,
                        "OperationNotAllowed",
                        format!("Disk {} is attached to VM {vm}.", r.name),
                    ));
                }
            }
            ArmKind::VirtualMachine => {}
        }
        let (sub, location) = (r.sub.clone(), r.location.clone());
        let fault = self.operation_fault(req);
        let op = self.new_op(OpWhat::Delete, &key, fault);
        if let Some(r) = self.res.get_mut(&key) {
            r.busy = Some(op.clone());
            r.set_state("Deleting");
        }
        let mut headers = vec![
            ("location", self.location_url(kind, &sub, &location, &op)),
            ("retry-after", "0".to_owned()),
        ];
        if kind == ArmKind::VirtualMachine {
            headers.push((
                "azure-asyncoperation",
                self.async_url(kind, &sub, &location, &op),
            ));
        }
        Ok(respond(StatusCode::ACCEPTED, None, &headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_filters() {
        assert_eq!(
            parse_tag_filter("tagName eq 'hangar-pool' and tagValue eq 'p''1'"),
            Some(("hangar-pool".into(), Some("p'1".into())))
        );
        assert_eq!(parse_tag_filter("TAGNAME EQ 'k'"), Some(("k".into(), None)));
        assert_eq!(parse_tag_filter("resourceType eq 'x'"), None);
        assert_eq!(parse_tag_filter("tagName eq 'k"), None);
        assert_eq!(parse_tag_filter("tagName eq 'k' or tagValue eq 'v'"), None);
    }
}
