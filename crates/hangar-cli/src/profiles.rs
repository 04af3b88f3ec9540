//! Profiles: which servers this user talks to and the tokens to do it with,
//! in one TOML file that only its owner can read, replaced atomically so a
//! crash or a second `hangar` never leaves half a file behind.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Overrides where profiles are kept (scripts point it at a temp dir).
pub const CONFIG_DIR_ENV: &str = "HANGAR_CLI_CONFIG_DIR";
const FILE_NAME: &str = "config.toml";

/// What to tell someone who has no usable profile yet.
pub const NO_PROFILE_HINT: &str = "run `hangar init --url URL --username U --password-stdin` for a new server, or `hangar profile add --name N --url URL --username U --password-stdin` for an existing one";

/// One server and the session on it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub url: String,
    pub username: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<DateTime<Utc>>,
}

// Hand-written so the token never reaches a log or a panic message.
impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("token", &"<redacted>")
            .field("token_expires_at", &self.token_expires_at)
            .finish()
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profiles {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// A profile as `profile ls` shows it: everything but the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileSummary {
    pub name: String,
    pub url: String,
    pub username: String,
    pub active: bool,
    pub token_expires_at: Option<DateTime<Utc>>,
}

impl Profiles {
    /// The profile to use: `requested`, else the active one.
    pub fn resolve(&self, requested: Option<&str>) -> anyhow::Result<(&str, &Profile)> {
        let name = match requested.or(self.active.as_deref()) {
            Some(n) => n,
            None if self.profiles.is_empty() => {
                bail!("no profile is configured: {NO_PROFILE_HINT}")
            }
            None => bail!(
                "no profile is active (known: {}): run `hangar profile switch NAME` or pass --profile NAME",
                self.names()
            ),
        };
        match self.profiles.get_key_value(name) {
            Some((n, p)) => Ok((n.as_str(), p)),
            None if self.profiles.is_empty() => {
                bail!("profile {name:?} does not exist: {NO_PROFILE_HINT}")
            }
            None => bail!(
                "profile {name:?} does not exist (known: {}); {NO_PROFILE_HINT}",
                self.names()
            ),
        }
    }

    /// Refuses to overwrite: a second `init` or `add` with the same name is
    /// more likely a mistake than a wish to drop the old token.
    pub fn add(&mut self, name: &str, profile: Profile) -> anyhow::Result<()> {
        self.check_new(name)?;
        self.profiles.insert(name.to_owned(), profile);
        Ok(())
    }

    pub fn check_new(&self, name: &str) -> anyhow::Result<()> {
        if name.trim().is_empty() {
            bail!("a profile name must not be empty");
        }
        if self.profiles.contains_key(name) {
            bail!(
                "profile {name:?} already exists: pick another --name, refresh its token with `hangar profile login {name}`, or remove it with `hangar profile rm {name}`"
            );
        }
        Ok(())
    }

    pub fn switch(&mut self, name: &str) -> anyhow::Result<()> {
        if !self.profiles.contains_key(name) {
            bail!("profile {name:?} does not exist (known: {})", self.names());
        }
        self.active = Some(name.to_owned());
        Ok(())
    }

    /// Removes a profile; removing the active one leaves none active.
    pub fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        if self.profiles.remove(name).is_none() {
            bail!("profile {name:?} does not exist (known: {})", self.names());
        }
        if self.active.as_deref() == Some(name) {
            self.active = None;
        }
        Ok(())
    }

    pub fn summaries(&self) -> Vec<ProfileSummary> {
        self.profiles
            .iter()
            .map(|(name, p)| ProfileSummary {
                name: name.clone(),
                url: p.url.clone(),
                username: p.username.clone(),
                active: self.active.as_deref() == Some(name),
                token_expires_at: p.token_expires_at,
            })
            .collect()
    }

    fn names(&self) -> String {
        if self.profiles.is_empty() {
            return "none".into();
        }
        self.profiles
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where profiles live: `$HANGAR_CLI_CONFIG_DIR` when set and not empty,
/// else `<user config dir>/hangar`.
pub fn resolve_dir(env: Option<OsString>, user_config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = env.filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    match user_config {
        Some(d) => Ok(d.join("hangar")),
        None => bail!("cannot find the user's config directory; set {CONFIG_DIR_ENV}"),
    }
}

/// The profile file on disk.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    dir: PathBuf,
}

impl ProfileStore {
    /// The store this process should use (environment, then the user's
    /// config dir).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self::at(resolve_dir(
            std::env::var_os(CONFIG_DIR_ENV),
            dirs::config_dir(),
        )?))
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The profiles; none yet is not an error.
    pub fn load(&self) -> anyhow::Result<Profiles> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Profiles::default()),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        tighten_mode(&path)?;
        toml::from_str(&text)
            .with_context(|| format!("{} is not a valid profile file", path.display()))
    }

    /// Writes all profiles: a private temp file in the same directory, then
    /// a rename over the old one.
    pub fn save(&self, profiles: &Profiles) -> anyhow::Result<()> {
        create_private_dir(&self.dir)?;
        let path = self.path();
        let text = toml::to_string(profiles).context("cannot encode profiles")?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".config.toml.")
            .tempfile_in(&self.dir)
            .with_context(|| format!("cannot create a temp file in {}", self.dir.display()))?;
        set_private(tmp.path(), 0o600)?;
        tmp.write_all(text.as_bytes())
            .and_then(|()| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        // Make the rename itself durable.
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn set_private(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot restrict {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// A token file others can read (copied around, or made by an old
/// version) is made private again, with a note so the user knows.
fn tighten_mode(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("cannot stat {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            eprintln!(
                "note: {} was readable by others (mode {:o}); made it 0600",
                path.display(),
                mode & 0o777
            );
            set_private(path, 0o600)?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(url: &str) -> Profile {
        Profile {
            url: url.into(),
            username: "admin".into(),
            token: "tok-secret".into(),
            token_expires_at: Some("2030-01-02T03:04:05Z".parse().unwrap()),
        }
    }

    #[test]
    fn round_trip_with_private_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = resolve_dir(Some(tmp.path().join("cfg").into()), None).unwrap();
        let store = ProfileStore::at(&dir);
        assert_eq!(store.load().unwrap(), Profiles::default(), "no file yet");

        let mut p = Profiles::default();
        p.add("prod", profile("https://prod")).unwrap();
        p.add("dev", profile("http://127.0.0.1:9997")).unwrap();
        p.switch("prod").unwrap();
        store.save(&p).unwrap();
        assert_eq!(store.load().unwrap(), p);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            let dmode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(dmode & 0o777, 0o700);
        }

        // A rewrite replaces the file and leaves no temp file behind.
        p.remove("dev").unwrap();
        store.save(&p).unwrap();
        assert_eq!(store.load().unwrap(), p);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, [std::ffi::OsString::from("config.toml")]);
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_file_is_made_private_on_load() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let store = ProfileStore::at(tmp.path());
        let mut p = Profiles::default();
        p.add("x", profile("https://x")).unwrap();
        store.save(&p).unwrap();
        std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(store.load().unwrap(), p);
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn config_dir_env_wins_unless_empty() {
        let user = Some(PathBuf::from("/home/u/.config"));
        assert_eq!(
            resolve_dir(Some("/tmp/h".into()), user.clone()).unwrap(),
            PathBuf::from("/tmp/h")
        );
        assert_eq!(
            resolve_dir(Some("".into()), user.clone()).unwrap(),
            PathBuf::from("/home/u/.config/hangar")
        );
        assert_eq!(
            resolve_dir(None, user).unwrap(),
            PathBuf::from("/home/u/.config/hangar")
        );
        assert!(resolve_dir(None, None).is_err());
    }

    #[test]
    fn resolve_explains_what_to_do() {
        let mut p = Profiles::default();
        let e = p.resolve(None).unwrap_err().to_string();
        assert!(
            e.contains("hangar init") && e.contains("hangar profile add"),
            "{e}"
        );
        let e = p.resolve(Some("prod")).unwrap_err().to_string();
        assert!(
            e.contains("\"prod\" does not exist") && e.contains("hangar init"),
            "{e}"
        );

        p.add("a", profile("https://a")).unwrap();
        p.add("b", profile("https://b")).unwrap();
        let e = p.resolve(None).unwrap_err().to_string();
        assert!(
            e.contains("no profile is active") && e.contains("a, b"),
            "{e}"
        );
        assert_eq!(p.resolve(Some("b")).unwrap().1.url, "https://b");
        p.switch("a").unwrap();
        assert_eq!(p.resolve(None).unwrap().0, "a");
        assert!(p.switch("zzz").is_err());
        assert!(
            p.add("a", profile("https://other")).is_err(),
            "no silent overwrite"
        );

        p.remove("a").unwrap();
        assert_eq!(
            p.active, None,
            "removing the active profile leaves none active"
        );
        assert!(p.remove("a").is_err());
    }

    #[test]
    fn summaries_and_debug_never_show_the_token() {
        let mut p = Profiles::default();
        p.add("prod", profile("https://prod")).unwrap();
        p.switch("prod").unwrap();
        let s = p.summaries();
        assert_eq!(s.len(), 1);
        assert!(s[0].active);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("tok-secret"), "{json}");
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("tok-secret"), "{dbg}");
    }
}
