//! Webhook intake as the server does it: the signature header checked over
//! the raw body with the entity's secret, and only then the payload parsed
//! (`workflow_job`, the delivery target), its labels read and its subject
//! routed. Properties: nothing panics, and a body is accepted only when its
//! signature is the HMAC-SHA256 of exactly that body under that secret.
//!
//! Input layout: `[secret length][secret][mode][body…]`. The mode says which
//! header the delivery carries, so the fuzzer reaches both the refusals and
//! the parser behind a valid signature:
//!
//! | mode % 6 | header |
//! |---|---|
//! | 0 | the right signature |
//! | 1 | a signature made with another secret |
//! | 2 | the right signature of a body one bit different |
//! | 3 | the body's first line, as sent (any string); the rest is the body |
//! | 4 | the right signature in upper-case hex with spaces around |
//! | 5 | only an SHA-1 header, or none |

use hangar_core::{EntityScope, JobAction, Label, Labels, ScopeRef};
use hangar_github::routing::{self, Subject};
use hangar_github::webhook::{
    DeliveryTarget, SignatureError, WorkflowJobEvent, parse_signature_header, sign,
    signature_from_headers, verify,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The MAC computed here, apart from the code under test.
fn mac(secret: &[u8], body: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(body);
    m.finalize().into_bytes().into()
}

/// Builds an input in this target's layout (seeds and tests use it).
pub fn input(secret: &[u8], mode: u8, body: &[u8]) -> Vec<u8> {
    let secret = &secret[..secret.len().min(255)];
    let mut v = Vec::with_capacity(secret.len() + body.len() + 2);
    v.push(secret.len() as u8);
    v.extend_from_slice(secret);
    v.push(mode);
    v.extend_from_slice(body);
    v
}

pub fn run(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (secret, rest) = rest.split_at(n);
    let Some((&mode, mut body)) = rest.split_first() else {
        return;
    };
    let right = mac(secret, body);
    let raw_header;
    let (sig256, sha1): (Option<String>, Option<&str>) = match mode % 6 {
        0 => (Some(format!("sha256={}", hex::encode(right))), None),
        1 => {
            let mut other = secret.to_vec();
            other.push(mode);
            (Some(sign(&other, body)), None)
        }
        2 => {
            let mut near = body.to_vec();
            match near.first_mut() {
                Some(b) => *b ^= 1 << (mode % 8),
                None => near.push(0),
            }
            (Some(sign(secret, &near)), None)
        }
        3 => {
            let cut = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
            raw_header = String::from_utf8_lossy(&body[..cut]).into_owned();
            body = body.get(cut + 1..).unwrap_or_default();
            (Some(raw_header), None)
        }
        4 => (Some(format!(" sha256={} ", hex::encode_upper(right))), None),
        _ => (None, (mode & 0x80 != 0).then_some("sha1=0123")),
    };
    let right = mac(secret, body);
    let result =
        signature_from_headers(sig256.as_deref(), sha1).and_then(|sig| verify(secret, body, &sig));
    match &result {
        Ok(()) => {
            assert!(!secret.is_empty(), "accepted with an empty secret");
            let sig = parse_signature_header(sig256.as_deref().expect("a header was checked"))
                .expect("an accepted header parses");
            assert_eq!(sig, right, "accepted a signature not made with the secret");
        }
        Err(e) => {
            // The right signature, however spelled, is never refused.
            if matches!(mode % 6, 0 | 4) && !secret.is_empty() {
                panic!("refused the right signature: {e}");
            }
            if secret.is_empty() && sig256.is_some() {
                assert!(
                    matches!(e, SignatureError::NoSecret | SignatureError::Malformed),
                    "{e}"
                );
            }
        }
    }
    if result.is_ok() {
        parse(body);
    }
}

/// What the server does with a verified body (`hangar-server`'s
/// `webhooks::shared` and `handle_verified`).
fn parse(body: &[u8]) {
    let _ = serde_json::from_slice::<serde_json::Value>(body);
    if let Ok(target) = serde_json::from_slice::<DeliveryTarget>(body) {
        subject_rules(Subject::from(&target));
    }
    let Ok(ev) = serde_json::from_slice::<WorkflowJobEvent>(body) else {
        return;
    };
    if let Some(action) = JobAction::from_webhook(&ev.action) {
        assert_eq!(action.as_str(), ev.action.as_str());
    }
    subject_rules(Subject::from(&ev));
    // Labels as intake reads them: all of them, or only the valid ones
    // (which then match no pool).
    let given = &ev.workflow_job.labels;
    let labels = Labels::from_strs(given).unwrap_or_else(|_| {
        Labels::from_strs(given.iter().filter(|l| Label::parse(l).is_ok())).unwrap_or_default()
    });
    assert!(labels.len() <= given.len().min(Labels::MAX));
    // What is stored comes back the same.
    if !labels.is_empty() {
        assert_eq!(
            Labels::parse_list(&labels.to_string()).as_ref(),
            Ok(&labels)
        );
    }
    let json = serde_json::to_string(&labels).expect("labels serialise");
    assert_eq!(
        serde_json::from_str::<Labels>(&json).ok().as_ref(),
        Some(&labels)
    );
}

/// Routing agrees with the per-entity check: a delivery routed to a scope
/// through the shared hook would be accepted by that scope's own hook.
fn subject_rules(s: Subject<'_>) {
    for c in s.candidates() {
        let scope = match c {
            ScopeRef::Repository { owner, name } => EntityScope::Repository {
                owner: owner.into(),
                name: name.into(),
            },
            ScopeRef::Organization { name } => EntityScope::Organization { name: name.into() },
            ScopeRef::Enterprise { slug } => EntityScope::Enterprise { slug: slug.into() },
        };
        assert!(c.is(&scope), "{c:?} is not its own scope");
        assert!(
            s.belongs_to(&scope),
            "routed to {scope:?}, which refuses it"
        );
    }
    let first = routing::route(s, Some);
    assert_eq!(first, s.candidates().next());
    if let Some(r) = s.repository {
        let _ = routing::url_host(r.html_url.as_deref().unwrap_or(""));
    }
}
