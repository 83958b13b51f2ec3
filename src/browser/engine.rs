//! Which browser runs the sessions (`BROWSER`): Debian's `chromium-headless-shell` — the
//! headless embedder alone, the same Blink and V8 as `chromium` without the desktop layer, half
//! the memory and the time to a QR — or the full `chromium` in its new headless mode. Both read
//! and write the same profiles. docs/browser-engines.md lists what the shell lacks and what the
//! daemon does about each point.
//!
//! Resolved once at start: `CHROMIUM_PATH` names a binary explicitly (its engine is `BROWSER`'s,
//! or guessed from the file name under `auto`); otherwise `auto` takes the shell where it is
//! installed, else `chromium`. The version comes from `<binary> --version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::is_executable;

/// `BROWSER`: what the operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// The shell where installed, else `chromium`.
    Auto,
    /// `chromium-headless-shell`.
    Shell,
    /// `chromium --headless=new`.
    Chromium,
}

/// The engine a session's browser runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// `chromium-headless-shell`: headless by construction; no process singleton, no
    /// `window.chrome`, notifications denied (docs/browser-engines.md).
    Shell,
    /// The desktop `chromium` in its new headless mode.
    Chromium,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Shell => "shell",
            Engine::Chromium => "chromium",
        }
    }

    /// The Debian package that installs it.
    pub fn package(self) -> &'static str {
        match self {
            Engine::Shell => "chromium-headless-shell",
            Engine::Chromium => "chromium",
        }
    }

    /// The binary's name in Debian's `/usr/lib/chromium` (`/usr/bin/…` are shell wrappers:
    /// launching the binary directly keeps the daemon's pid the browser's pid).
    fn debian_name(self) -> &'static str {
        match self {
            Engine::Shell => "chromium-headless-shell",
            Engine::Chromium => "chromium",
        }
    }

    /// Names tried on PATH after the Debian binary.
    fn names_on_path(self) -> &'static [&'static str] {
        match self {
            Engine::Shell => &["chromium-headless-shell", "headless_shell"],
            Engine::Chromium => &["chromium", "chromium-browser", "google-chrome", "chrome"],
        }
    }

    /// The engine of a binary named explicitly, from its file name.
    fn of_path(path: &Path) -> Engine {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.contains("headless-shell") || name.contains("headless_shell") {
            Engine::Shell
        } else {
            Engine::Chromium
        }
    }

    /// The installed binary of this engine, if any.
    fn find(self, search: &Search) -> Option<PathBuf> {
        let debian = search.lib_dir.join(self.debian_name());
        if is_executable(&debian) {
            return Some(debian);
        }
        std::env::split_paths(&search.path_var)
            .flat_map(|dir| self.names_on_path().iter().map(move |name| dir.join(name)))
            .find(|candidate| is_executable(candidate))
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The browser binary sessions launch, as resolved at start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BrowserBinary {
    pub engine: Engine,
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// From `<binary> --version` (`"unknown"` when it printed none).
    #[schema(example = "156.0.8078.114")]
    pub version: String,
}

impl BrowserBinary {
    /// `chromium-headless-shell 156.0.8078.114`, for messages.
    pub fn describe(&self) -> String {
        format!("{} {}", self.engine.package(), self.version)
    }
}

/// A browser setting that cannot work; the daemon refuses to start (exit 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("CHROMIUM_PATH {0} is not an executable file")]
    NotExecutable(PathBuf),
    #[error("BROWSER={engine} but {package} is not installed: apt-get install {package} (or set CHROMIUM_PATH)", package = .engine.package())]
    NotInstalled { engine: Engine },
}

/// Where browsers are looked for: Debian's folder, then `PATH`.
#[derive(Debug, Clone)]
pub struct Search {
    pub lib_dir: PathBuf,
    pub path_var: std::ffi::OsString,
}

impl Search {
    /// This machine's: `/usr/lib/chromium` and the daemon's `PATH`.
    pub fn system() -> Search {
        Search {
            lib_dir: PathBuf::from("/usr/lib/chromium"),
            path_var: std::env::var_os("PATH").unwrap_or_default(),
        }
    }
}

/// What [`resolve`] found: the binary and one sentence on why it was chosen, or (under `auto`,
/// with no browser installed) why there is none — the daemon then runs, not ready, and a start
/// fails with that sentence.
pub type Resolved = Result<(BrowserBinary, String), String>;

/// Picks the binary. An explicit `CHROMIUM_PATH` that is not executable, or an explicit engine
/// that is not installed, is an error; `auto` with nothing installed is not (see [`Resolved`]).
pub async fn resolve(
    choice: EngineChoice,
    configured: Option<&Path>,
) -> Result<Resolved, EngineError> {
    resolve_in(&Search::system(), choice, configured).await
}

/// [`resolve`], looking where `search` says.
pub async fn resolve_in(
    search: &Search,
    choice: EngineChoice,
    configured: Option<&Path>,
) -> Result<Resolved, EngineError> {
    let (engine, path, why) = match (configured, choice) {
        (Some(path), _) if !is_executable(path) => {
            return Err(EngineError::NotExecutable(path.to_path_buf()))
        }
        (Some(path), EngineChoice::Auto) => {
            let engine = Engine::of_path(path);
            (engine, path.to_path_buf(), "CHROMIUM_PATH".to_owned())
        }
        (Some(path), explicit) => {
            let engine = explicit_engine(explicit);
            (engine, path.to_path_buf(), format!("CHROMIUM_PATH, BROWSER={engine}"))
        }
        (None, EngineChoice::Auto) => match (
            Engine::Shell.find(search),
            Engine::Chromium.find(search),
        ) {
            (Some(path), _) => (
                Engine::Shell,
                path,
                "BROWSER=auto: chromium-headless-shell is installed".to_owned(),
            ),
            (None, Some(path)) => (
                Engine::Chromium,
                path,
                "BROWSER=auto: chromium-headless-shell is not installed (apt-get install chromium-headless-shell halves the memory per session)".to_owned(),
            ),
            (None, None) => {
                return Ok(Err(
                    "no browser found: install chromium-headless-shell (or chromium), or set CHROMIUM_PATH"
                        .to_owned(),
                ))
            }
        },
        (None, explicit) => {
            let engine = explicit_engine(explicit);
            let path = engine
                .find(search)
                .ok_or(EngineError::NotInstalled { engine })?;
            (engine, path, format!("BROWSER={engine}"))
        }
    };
    let version = version_of(&path).await;
    Ok(Ok((
        BrowserBinary {
            engine,
            path,
            version,
        },
        why,
    )))
}

fn explicit_engine(choice: EngineChoice) -> Engine {
    match choice {
        EngineChoice::Shell => Engine::Shell,
        EngineChoice::Chromium | EngineChoice::Auto => Engine::Chromium,
    }
}

/// How long `--version` may take (it prints and exits without starting a browser).
const VERSION_WITHIN: Duration = Duration::from_secs(10);

/// `<binary> --version` → `156.0.8078.114` (Debian's builds print `Chromium 156.0.8078.114`).
async fn version_of(path: &Path) -> String {
    let run = tokio::process::Command::new(path)
        .arg("--version")
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| super::process::env_allowed(name)))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(VERSION_WITHIN, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => {
            log::warn!("{} --version: {e}", path.display());
            return "unknown".to_owned();
        }
        Err(_) => {
            log::warn!(
                "{} --version did not answer within {VERSION_WITHIN:?}",
                path.display()
            );
            return "unknown".to_owned();
        }
    };
    parse_version(&String::from_utf8_lossy(&output.stdout)).unwrap_or_else(|| "unknown".to_owned())
}

/// The first word that looks like a dotted version number.
fn parse_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.split('.').count() >= 2 && w.split('.').all(|p| p.parse::<u32>().is_ok()))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_banner() {
        assert_eq!(
            parse_version("Chromium 156.0.8078.114 \n").as_deref(),
            Some("156.0.8078.114")
        );
        assert_eq!(
            parse_version("Google Chrome 120.0.6099.71 unknown").as_deref(),
            Some("120.0.6099.71")
        );
        assert_eq!(parse_version("no version here"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn an_explicit_binary_s_engine_is_guessed_from_its_name() {
        for (path, engine) in [
            ("/usr/lib/chromium/chromium-headless-shell", Engine::Shell),
            (
                "/opt/chrome-headless-shell-linux64/chrome-headless-shell",
                Engine::Shell,
            ),
            ("/opt/x/headless_shell", Engine::Shell),
            ("/usr/lib/chromium/chromium", Engine::Chromium),
            ("/usr/bin/google-chrome", Engine::Chromium),
        ] {
            assert_eq!(Engine::of_path(Path::new(path)), engine, "{path}");
        }
    }

    /// A folder standing in for `/usr/lib/chromium` with the given executables.
    fn installed(names: &[&str]) -> (tempfile::TempDir, Search) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            let path = dir.path().join(name);
            std::fs::write(&path, "#!/bin/sh\necho Chromium 156.0.8078.114\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let search = Search {
            lib_dir: dir.path().to_path_buf(),
            path_var: Default::default(),
        };
        (dir, search)
    }

    #[tokio::test]
    async fn auto_takes_the_shell_where_installed_else_chromium() {
        let (_both, search) = installed(&["chromium-headless-shell", "chromium"]);
        let (b, why) = resolve_in(&search, EngineChoice::Auto, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (b.engine, b.version.as_str()),
            (Engine::Shell, "156.0.8078.114")
        );
        assert!(
            why.contains("chromium-headless-shell is installed"),
            "{why}"
        );
        let (b, _) = resolve_in(&search, EngineChoice::Chromium, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.engine, Engine::Chromium);

        let (_one, search) = installed(&["chromium"]);
        let (b, why) = resolve_in(&search, EngineChoice::Auto, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.engine, Engine::Chromium);
        assert!(why.contains("not installed"), "{why}");
        assert_eq!(
            resolve_in(&search, EngineChoice::Shell, None)
                .await
                .unwrap_err(),
            EngineError::NotInstalled {
                engine: Engine::Shell
            }
        );

        let (_none, search) = installed(&[]);
        let none = resolve_in(&search, EngineChoice::Auto, None).await.unwrap();
        assert!(none
            .unwrap_err()
            .contains("install chromium-headless-shell"));
    }

    #[tokio::test]
    async fn refusals_say_what_to_do() {
        let err = resolve(EngineChoice::Auto, Some(Path::new("/nonexistent/chromium")))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CHROMIUM_PATH /nonexistent/chromium is not an executable file"
        );
        assert_eq!(
            EngineError::NotInstalled {
                engine: Engine::Shell
            }
            .to_string(),
            "BROWSER=shell but chromium-headless-shell is not installed: apt-get install chromium-headless-shell (or set CHROMIUM_PATH)"
        );
    }
}
