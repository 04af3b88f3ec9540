//! Webhook deliveries: the HMAC check and the payload types.
//!
//! The signature is checked on the raw bytes before anything parses them.
//! Only `X-Hub-Signature-256` counts; a delivery signed with SHA-1 alone is
//! refused.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

pub const SIGNATURE_256_HEADER: &str = "x-hub-signature-256";
pub const SIGNATURE_SHA1_HEADER: &str = "x-hub-signature";
pub const EVENT_HEADER: &str = "x-github-event";
pub const DELIVERY_HEADER: &str = "x-github-delivery";
pub const TARGET_TYPE_HEADER: &str = "x-github-hook-installation-target-type";
pub const TARGET_ID_HEADER: &str = "x-github-hook-installation-target-id";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error(
        "only an SHA-1 signature (X-Hub-Signature) was sent; Hangar requires X-Hub-Signature-256"
    )]
    Sha1Only,
    #[error("X-Hub-Signature-256 is not of the form sha256=<64 hex digits>")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
    #[error("no webhook secret is configured for this target")]
    NoSecret,
}

/// Parses `sha256=<hex>` into the 32 raw bytes.
pub fn parse_signature_header(value: &str) -> Result<[u8; 32], SignatureError> {
    let hex_part = value
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let digits = hex_part.as_bytes();
    if digits.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    // By table, without a branch per digit: the digits of a digest are
    // random, so a branchy decoder mispredicts on about half of them
    // (`hex::decode_to_slice` was 2% of a rejected delivery's CPU).
    let mut out = [0u8; 32];
    let mut invalid = 0u8;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
        invalid |= (hi | lo) & 0x10;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    if invalid != 0 {
        return Err(SignatureError::Malformed);
    }
    Ok(out)
}

/// Hex digit values; 0x10 marks a byte that is not a hex digit.
const HEX: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Checks `signature` (raw bytes from [`parse_signature_header`]) over
/// `body` with `secret`, in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: &[u8; 32]) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value GitHub would send for `body` signed with `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Which header to check, given what the delivery carried.
pub fn signature_from_headers(
    sig256: Option<&str>,
    sha1: Option<&str>,
) -> Result<[u8; 32], SignatureError> {
    match (sig256, sha1) {
        (Some(v), _) => parse_signature_header(v),
        (None, Some(_)) => Err(SignatureError::Sha1Only),
        (None, None) => Err(SignatureError::Missing),
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub login: String,
    pub id: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Repository {
    pub id: Option<i64>,
    pub name: String,
    pub full_name: String,
    pub owner: Account,
    pub html_url: Option<String>,
}

impl Repository {
    /// `(owner, name)` from `full_name`, GitHub's canonical form (in some
    /// payloads `owner.login` disagrees with it), else from the parts.
    pub fn owner_and_name(&self) -> (&str, &str) {
        self.full_name
            .split_once('/')
            .unwrap_or((self.owner.login.as_str(), self.name.as_str()))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Organization {
    pub login: String,
    pub id: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Enterprise {
    pub slug: String,
    pub id: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Installation {
    pub id: i64,
}

/// The job inside a `workflow_job` delivery. Tolerant: older payloads lack
/// several fields.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WorkflowJob {
    pub id: i64,
    pub run_id: Option<i64>,
    #[serde(default = "one")]
    pub run_attempt: i64,
    pub name: Option<String>,
    pub status: Option<String>,
    pub conclusion: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    pub runner_id: Option<i64>,
    pub runner_name: Option<String>,
    pub runner_group_name: Option<String>,
}

fn one() -> i64 {
    1
}

/// A `workflow_job` whose numbers GitHub could not have sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "workflow_job.{field} must be a positive integer (GitHub numbers them from 1), got {value}"
)]
pub struct InvalidJob {
    pub field: &'static str,
    pub value: i64,
}

impl WorkflowJob {
    /// Checks the numbers the job is keyed by. GitHub's webhook schema
    /// (`@octokit/openapi-webhooks`, `webhook-workflow-job-*`) types `id`,
    /// `run_id` and `run_attempt` as required integers; they are database
    /// ids and an attempt count, so GitHub never sends one below 1 (the
    /// REST `job` schema: "1 for first attempt"). A 0 or negative value is
    /// a forged or broken delivery and must not become a job row.
    pub fn check_numbers(&self) -> Result<(), InvalidJob> {
        let fields = [
            ("id", Some(self.id)),
            ("run_id", self.run_id),
            ("run_attempt", Some(self.run_attempt)),
        ];
        for (field, value) in fields {
            if let Some(value) = value
                && value < 1
            {
                return Err(InvalidJob { field, value });
            }
        }
        Ok(())
    }
}

/// A `workflow_job` delivery.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct WorkflowJobEvent {
    pub action: String,
    pub workflow_job: WorkflowJob,
    pub repository: Option<Repository>,
    pub organization: Option<Organization>,
    pub enterprise: Option<Enterprise>,
    pub installation: Option<Installation>,
}

/// The parts of any delivery that say whom it is about (used to route a
/// GitHub App's single hook).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
pub struct DeliveryTarget {
    pub repository: Option<Repository>,
    pub organization: Option<Organization>,
    pub enterprise: Option<Enterprise>,
    pub installation: Option<Installation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: i64, run_id: Option<i64>, run_attempt: i64) -> WorkflowJob {
        WorkflowJob {
            id,
            run_id,
            run_attempt,
            name: None,
            status: None,
            conclusion: None,
            labels: vec![],
            runner_id: None,
            runner_name: None,
            runner_group_name: None,
        }
    }

    #[test]
    fn job_numbers_start_at_one() {
        assert_eq!(job(1, Some(1), 1).check_numbers(), Ok(()));
        // Ids above 2^31 exist.
        assert_eq!(job(1 << 40, None, 3).check_numbers(), Ok(()));
        let e = job(0, Some(1), 1).check_numbers().unwrap_err();
        assert_eq!((e.field, e.value), ("id", 0));
        assert_eq!(
            e.to_string(),
            "workflow_job.id must be a positive integer (GitHub numbers them from 1), got 0"
        );
        let e = job(-5, Some(1), 1).check_numbers().unwrap_err();
        assert_eq!((e.field, e.value), ("id", -5));
        let e = job(7, Some(0), 1).check_numbers().unwrap_err();
        assert_eq!(e.field, "run_id");
        let e = job(7, Some(9), -1).check_numbers().unwrap_err();
        assert_eq!((e.field, e.value), ("run_attempt", -1));
    }

    #[test]
    fn sign_then_verify() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let header = sign(b"s3cret", body);
        let sig = parse_signature_header(&header).unwrap();
        verify(b"s3cret", body, &sig).unwrap();
        assert_eq!(verify(b"other", body, &sig), Err(SignatureError::Mismatch));
        let mut changed = body.to_vec();
        changed[3] ^= 1;
        assert_eq!(
            verify(b"s3cret", &changed, &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"", body, &sig), Err(SignatureError::NoSecret));
    }

    #[test]
    fn github_documented_example() {
        // From GitHub's "Validating webhook deliveries" docs.
        let sig = parse_signature_header(
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )
        .unwrap();
        verify(b"It's a Secret to Everybody", b"Hello, World!", &sig).unwrap();
    }

    #[test]
    fn header_forms() {
        assert_eq!(
            signature_from_headers(None, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            signature_from_headers(None, Some("sha1=abc")),
            Err(SignatureError::Sha1Only)
        );
        assert_eq!(
            signature_from_headers(Some("sha1=abc"), None),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            signature_from_headers(Some("sha256=zz"), None),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            signature_from_headers(Some(&format!("sha256={}", "0".repeat(62))), None),
            Err(SignatureError::Malformed)
        );
        for bad in [
            format!("{}g", "0".repeat(63)),
            format!("{}é", "0".repeat(62)),
        ] {
            assert_eq!(
                signature_from_headers(Some(&format!("sha256={bad}")), None),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        let digest = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let lower = signature_from_headers(Some(&format!("sha256={digest}")), None).unwrap();
        let upper = format!("sha256={}", digest.to_uppercase());
        assert_eq!(signature_from_headers(Some(&upper), None), Ok(lower));
        assert_eq!(lower[..3], [0x75, 0x71, 0x07]);
        assert_eq!(lower[31], 0x17);
    }

    #[test]
    fn parses_every_shared_payload() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/github-webhooks/workflow_job"
        );
        let Ok(entries) = std::fs::read_dir(dir) else {
            panic!("webhook fixtures missing at {dir}");
        };
        let mut n = 0;
        for e in entries {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let ev: WorkflowJobEvent = serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            assert!(ev.workflow_job.id > 0);
            assert!(ev.repository.is_some());
            n += 1;
        }
        assert!(n >= 6);
    }
}
