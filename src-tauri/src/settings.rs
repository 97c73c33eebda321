//! What the desk remembers between runs, and the one-instance-per-user lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::model::Settings;

/// `settings.json` in the app's config folder (`~/.config/org.sosdesk.desk/`).
#[derive(Debug, Clone)]
pub struct SettingsFile {
    path: PathBuf,
}

impl SettingsFile {
    pub fn in_dir(dir: &Path) -> SettingsFile {
        SettingsFile { path: dir.join("settings.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved settings; defaults when there are none yet. A file that cannot be read is
    /// logged and ignored (the desk must start), and left in place for the admin to look at.
    pub fn load(&self) -> Settings {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(file = %self.path.display(), error = %e, "ignoring unreadable desk settings");
                Settings::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "cannot read desk settings");
                Settings::default()
            }
        }
    }

    /// Writes the whole file next to the old one and renames it over: a crash leaves the old or
    /// the new settings, never half of them.
    pub fn save(&self, s: &Settings) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(s).map_err(std::io::Error::other)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The name recorded with an acknowledgement: the one in the settings, else the OS user.
pub fn officer_name(s: &Settings) -> String {
    let name = s.officer_name.trim();
    if !name.is_empty() {
        return name.to_string();
    }
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|| "unknown officer".to_string())
}

/// Held for the life of the process: a second desk for the same user on a machine without a
/// D-Bus session (where the single-instance plugin cannot see the first) finds it taken.
pub struct InstanceLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another sosdesk desk is already running for this user (lock file {0})")]
    Held(PathBuf),
    #[error("cannot create the lock file {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

impl InstanceLock {
    pub fn acquire(dir: &Path) -> Result<InstanceLock, LockError> {
        let path = dir.join("desk.lock");
        std::fs::create_dir_all(dir).map_err(|e| LockError::Io(path.clone(), e))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LockError::Io(path.clone(), e))?;
        // An advisory lock (flock): released by the kernel when the process dies, so a crash never
        // leaves a stale lock behind.
        match file.try_lock() {
            Ok(()) => Ok(InstanceLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held(path)),
            Err(std::fs::TryLockError::Error(e)) => Err(LockError::Io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Theme;

    #[test]
    fn settings_round_trip_and_survive_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let f = SettingsFile::in_dir(&dir.path().join("sub"));
        assert_eq!(f.load(), Settings::default());
        let s = Settings {
            officer_name: "Officer Jones".into(),
            theme: Theme::Dark,
            config_path: Some("/x.toml".into()),
            desk_account: Some("desk2".into()),
        };
        f.save(&s).unwrap();
        assert_eq!(f.load(), s);
        std::fs::write(f.path(), "{not json").unwrap();
        assert_eq!(f.load(), Settings::default());
    }

    #[test]
    fn officer_name_prefers_the_setting() {
        let s = Settings { officer_name: "  Jo  ".into(), ..Default::default() };
        assert_eq!(officer_name(&s), "Jo");
        assert!(!officer_name(&Settings::default()).is_empty());
    }

    #[test]
    fn second_lock_in_the_same_dir_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path()).unwrap();
        assert!(matches!(InstanceLock::acquire(dir.path()), Err(LockError::Held(_))));
        drop(first);
        InstanceLock::acquire(dir.path()).unwrap();
    }
}
