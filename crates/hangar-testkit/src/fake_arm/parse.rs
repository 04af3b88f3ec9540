//! Small parsers and checks of request input: JSON paths, query strings,
//! resource ids and keys, names, locations, tags, base64 fields.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use super::ArmKind;
use super::reply::{ArmError, bad, invalid};

/// Largest decoded `customData`/`userData` ARM accepts.
pub(super) const CUSTOM_DATA_MAX: usize = 65_535;

/// Sets `path` in `v`, creating objects on the way; leaves `v` alone where
/// something on the way is not an object (request input may be any shape).
pub(super) fn set_path(v: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        if cur.is_null() {
            *cur = json!({});
        }
        let Some(obj) = cur.as_object_mut() else {
            return;
        };
        cur = obj.entry(p.to_string()).or_insert(Value::Null);
    }
    if cur.is_null() {
        *cur = json!({});
    }
    if let Some(obj) = cur.as_object_mut() {
        obj.insert(last.to_string(), value);
    }
}

pub(super) fn remove_path(v: &mut Value, path: &[&str]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = v;
    for p in parents {
        cur = cur.get_mut(*p)?;
    }
    cur.as_object_mut()?.remove(*last)
}

pub(super) fn pct_decode(s: &str) -> String {
    pub(super) fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

pub(super) fn canonical_id(kind: ArmKind, sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/{}/{}/{name}",
        kind.namespace(),
        kind.collection()
    )
}

pub(super) fn key_of(kind: ArmKind, sub: &str, rg: &str, name: &str) -> String {
    canonical_id(kind, sub, rg, name).to_ascii_lowercase()
}

/// ARM normalises `West US` to `westus`.
pub(super) fn norm_location(l: &str) -> String {
    l.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase()
}

pub(super) fn check_name(kind: ArmKind, name: &str) -> Result<(), ArmError> {
    let ok = !name.is_empty()
        && name.len() <= kind.max_name()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad(
            "InvalidResourceName",
            format!(
                "Resource name '{name}' is invalid: use 1 to {} letters, digits, '-', '_' or '.', not ending in '.'",
                kind.max_name()
            ),
        ))
    }
}

pub(super) fn require_location(body: &Value) -> Result<String, ArmError> {
    match body["location"].as_str() {
        Some(l) if !l.trim().is_empty() => Ok(norm_location(l)),
        _ => Err(bad(
            "LocationRequired",
            "The location property is required for this definition.",
        )),
    }
}

pub(super) fn parse_tags(body: &Value) -> Result<BTreeMap<String, String>, ArmError> {
    let mut tags = BTreeMap::new();
    match &body["tags"] {
        Value::Null => {}
        Value::Object(m) => {
            if m.len() > 50 {
                return Err(invalid("A resource can carry at most 50 tags."));
            }
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(bad(
                        "InvalidRequestContent",
                        format!("The value of tag '{k}' must be a string."),
                    ));
                };
                if k.is_empty() || k.len() > 512 || v.len() > 256 {
                    return Err(invalid(format!(
                        "Tag '{k}': names are 1 to 512 characters, values at most 256."
                    )));
                }
                tags.insert(k.clone(), v.to_owned());
            }
        }
        _ => {
            return Err(bad(
                "InvalidRequestContent",
                "tags must be an object of strings.",
            ));
        }
    }
    Ok(tags)
}

pub(super) fn parse_delete_option(v: &Value, what: &str) -> Result<bool, ArmError> {
    match v {
        Value::Null => Ok(false),
        Value::String(s) if s.eq_ignore_ascii_case("Delete") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("Detach") => Ok(false),
        other => Err(invalid(format!(
            "{what} deleteOption must be 'Delete' or 'Detach', not {other}."
        ))),
    }
}

pub(super) fn check_base64(v: &Value, field: &str) -> Result<Option<String>, ArmError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| {
                    invalid(format!(
                        "The value of parameter {field} is invalid: not base64 ({e})."
                    ))
                })?;
            if decoded.len() > CUSTOM_DATA_MAX {
                return Err(invalid(format!(
                    "The value of parameter {field} is invalid: {} bytes decoded, at most {CUSTOM_DATA_MAX} allowed.",
                    decoded.len()
                )));
            }
            Ok(Some(s.clone()))
        }
        _ => Err(invalid(format!(
            "The value of parameter {field} must be a string."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("api-version=1&%24filter=tagName+eq+%27a%27&x=%zz&y=%4"),
            vec![
                ("api-version".into(), "1".into()),
                ("$filter".into(), "tagName eq 'a'".into()),
                ("x".into(), "%zz".into()),
                ("y".into(), "%4".into()),
            ]
        );
    }
}
