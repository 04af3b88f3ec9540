//! The three runner files inside GitHub's `encoded_jit_config`, so garm's
//! boot script can fetch them one by one instead of the whole config.
//!
//! GitHub's `encoded_jit_config` is base64 of a JSON object whose keys are
//! the runner's dot-files (`.runner`, `.credentials`,
//! `.credentials_rsaparams`) and whose values are base64 of each file.

use base64::Engine as _;

/// One of the files the runner reads from its install folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JitFile {
    Runner,
    Credentials,
    CredentialsRsaParams,
}

/// Why a file could not be taken out of a JIT config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JitFileError {
    #[error("unknown JIT file {0:?}: expected runner, credentials or credentials_rsaparams")]
    UnknownName(String),
    #[error("the JIT config is not base64 of a JSON object of strings")]
    Malformed,
    #[error("the JIT config has no {0} file")]
    Missing(&'static str),
}

impl JitFile {
    pub const ALL: [JitFile; 3] = [
        JitFile::Runner,
        JitFile::Credentials,
        JitFile::CredentialsRsaParams,
    ];

    /// The route segment garm's script asks for (`credentials/<name>`); a
    /// leading dot is tolerated.
    pub fn parse(name: &str) -> Result<Self, JitFileError> {
        match name.strip_prefix('.').unwrap_or(name) {
            "runner" => Ok(Self::Runner),
            "credentials" => Ok(Self::Credentials),
            "credentials_rsaparams" => Ok(Self::CredentialsRsaParams),
            _ => Err(JitFileError::UnknownName(name.to_owned())),
        }
    }

    /// The file's name on disk, which is also its key in the config.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Runner => ".runner",
            Self::Credentials => ".credentials",
            Self::CredentialsRsaParams => ".credentials_rsaparams",
        }
    }

    /// Its bit in a set of files already handed out.
    pub fn bit(self) -> u8 {
        match self {
            Self::Runner => 1,
            Self::Credentials => 2,
            Self::CredentialsRsaParams => 4,
        }
    }

    /// The bits of all three files.
    pub fn all_bits() -> u8 {
        Self::ALL.iter().fold(0, |acc, f| acc | f.bit())
    }
}

/// The decoded content of `file` in `encoded` (GitHub's
/// `encoded_jit_config`), as the runner expects it on disk.
pub fn jit_file(encoded: &str, file: JitFile) -> Result<Vec<u8>, JitFileError> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let json = b64
        .decode(encoded.trim())
        .map_err(|_| JitFileError::Malformed)?;
    let files: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&json).map_err(|_| JitFileError::Malformed)?;
    let content = files
        .get(file.file_name())
        .ok_or(JitFileError::Missing(file.file_name()))?;
    b64.decode(content.trim())
        .map_err(|_| JitFileError::Malformed)
}

/// Builds an `encoded_jit_config` from file contents: what GitHub sends,
/// for fakes and tests.
pub fn encode_jit_config<'a>(files: impl IntoIterator<Item = (JitFile, &'a [u8])>) -> String {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let map: std::collections::BTreeMap<&str, String> = files
        .into_iter()
        .map(|(f, content)| (f.file_name(), b64.encode(content)))
        .collect();
    b64.encode(serde_json::to_vec(&map).expect("a map of strings serialises"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_names_parse() {
        let enc = encode_jit_config([
            (JitFile::Runner, &b"{\"agentId\": 7}"[..]),
            (JitFile::Credentials, &b"creds"[..]),
            (JitFile::CredentialsRsaParams, &b"rsa"[..]),
        ]);
        assert_eq!(
            jit_file(&enc, JitFile::Runner).unwrap(),
            b"{\"agentId\": 7}"
        );
        assert_eq!(
            jit_file(&enc, JitFile::CredentialsRsaParams).unwrap(),
            b"rsa"
        );
        assert_eq!(JitFile::parse("credentials").unwrap(), JitFile::Credentials);
        assert_eq!(JitFile::parse(".runner").unwrap(), JitFile::Runner);
        assert!(matches!(
            JitFile::parse("secrets"),
            Err(JitFileError::UnknownName(_))
        ));
        assert_eq!(JitFile::all_bits(), 7);

        let partial = encode_jit_config([(JitFile::Runner, &b"r"[..])]);
        assert_eq!(
            jit_file(&partial, JitFile::Credentials),
            Err(JitFileError::Missing(".credentials"))
        );
        assert_eq!(
            jit_file("not base64!", JitFile::Runner),
            Err(JitFileError::Malformed)
        );
    }
}
