//! One Chromium process and its whole process group.
//!
//! Chromium is started in its own process group with `PR_SET_PDEATHSIG = SIGKILL`, so the
//! browser dies with the daemon even on SIGKILL (the signal follows the *spawning thread*: spawn
//! from a long-lived arbiter thread, never from `spawn_blocking`). Dropping a [`BrowserProcess`]
//! kills the group; a reaper task waits on the child so there is never a zombie, and publishes
//! the exit the moment it happens.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

use super::BrowserError;

/// Environment variables Chromium keeps; everything else (tokens, `DATABASE_URL`) is cleared.
/// Entries ending in `*` are prefixes.
pub const ENV_ALLOW_LIST: [&str; 7] = [
    "PATH",
    "HOME",
    "LANG",
    "LC_*",
    "TZ",
    "XDG_*",
    "FONTCONFIG_*",
];

pub(super) fn env_allowed(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    ENV_ALLOW_LIST
        .iter()
        .any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *allowed,
        })
}

/// What to launch.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub executable: PathBuf,
    /// Which switches apply (the shell is headless by construction and has no desktop layer).
    pub engine: super::Engine,
    pub profile_dir: PathBuf,
    /// Prefix for log lines (`<userId>:<slot>`).
    pub log_key: String,
    pub startup_timeout: Duration,
    /// Which of [`MEMORY_SAVERS`] apply (all of them, except when a benchmark measures them one
    /// at a time).
    pub memory_savers: &'static [MemorySaver],
}

/// One Chromium setting that lowers the memory of an idle session, as measured by `cargo bench
/// --bench memory` (BENCHMARKS.md has each saving). Settings that would weaken the sandbox or
/// site isolation, or slow WhatsApp Web's JavaScript, are not here: see docs/ARCHITECTURE.md.
#[derive(Debug, Clone, Copy)]
pub enum MemorySaver {
    /// A command-line switch.
    Switch(&'static str),
    /// A Chromium feature to turn off (`--disable-features`, merged into one switch).
    DisableFeature(&'static str),
    /// A Chromium feature to turn on (`--enable-features`, merged into one switch).
    EnableFeature(&'static str),
    /// Saves memory on `chromium` only (on the shell it measured as nothing: not passed there).
    ChromiumOnly(&'static MemorySaver),
}

/// In the order the benchmark adds them.
pub const MEMORY_SAVERS: &[MemorySaver] = &[
    // The network service runs as a thread of the browser process instead of its own process.
    MemorySaver::EnableFeature("NetworkServiceInProcess2"),
    // No renderer started ahead of time for the next navigation (a session navigates once); the
    // shell keeps none anyway.
    MemorySaver::ChromiumOnly(&MemorySaver::DisableFeature(
        "SpareRendererForSitePerProcess",
    )),
    // No SwiftShader software GL in the GPU process (nothing a session shows needs WebGL).
    MemorySaver::Switch("--disable-software-rasterizer"),
];

/// Features turned off whatever the memory savers are: services a session never uses.
const DISABLED_FEATURES: [&str; 4] = [
    "Translate",
    "MediaRouter",
    "OptimizationHints",
    "DialMediaRouteProvider",
];

/// How the process ended, as text for logs and `lastError`.
pub type ExitReport = String;

pub struct BrowserProcess {
    pid: u32,
    exit: watch::Receiver<Option<ExitReport>>,
}

impl BrowserProcess {
    /// Starts Chromium on the profile with DevTools on a pipe, and returns the one-time
    /// WebSocket URL of its bridge ([`super::devtools`]). Chromium gets a cleared environment
    /// plus [`ENV_ALLOW_LIST`]: no daemon secret reaches a browser or renderer.
    pub async fn spawn(spec: &LaunchSpec) -> Result<(BrowserProcess, String), BrowserError> {
        let (pipe, child_ends) = super::devtools::pipes().map_err(BrowserError::Spawn)?;
        let mut cmd = tokio::process::Command::new(&spec.executable);
        cmd.args(chromium_args(spec))
            .env_clear()
            .envs(std::env::vars_os().filter(|(name, _)| env_allowed(name)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: prctl, fcntl and dup2 are async-signal-safe; nothing else runs between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                child_ends.install()
            });
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BrowserError::NotFound(format!(
                "{} is gone: install {} or set CHROMIUM_PATH",
                spec.executable.display(),
                spec.engine.package()
            )),
            _ => BrowserError::Spawn(e),
        })?;
        // The child's ends were moved into the pre_exec closure, which `cmd` owns: drop it so
        // our copies close and the pipe ends with the browser.
        drop(cmd);
        let pid = child
            .id()
            .ok_or_else(|| BrowserError::ExitedEarly("no pid".into()))?;
        let stderr = child.stderr.take().expect("stderr is piped");

        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(async move {
            let report = match child.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            let _ = exit_tx.send(Some(report));
        });
        let process = BrowserProcess { pid, exit: exit_rx };

        // Drain stderr for the browser's whole life (a full pipe would block it).
        let log_key = spec.log_key.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log::debug!("{log_key} chromium: {line}");
            }
        });
        let url = super::devtools::bridge(pipe, spec.log_key.clone())
            .await
            .map_err(BrowserError::Spawn)?;
        Ok((process, url))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `Some` once the process has exited.
    pub fn exit_report(&self) -> Option<ExitReport> {
        self.exit.borrow().clone()
    }

    /// Resolves when the process exits (immediately if it already has).
    pub fn exited(&self) -> impl std::future::Future<Output = ExitReport> + 'static {
        let mut exit = self.exit.clone();
        async move {
            match exit.wait_for(Option::is_some).await {
                Ok(report) => report.clone().unwrap_or_default(),
                Err(_) => "reaper gone".to_owned(),
            }
        }
    }

    async fn wait_report(&self, limit: Duration) -> ExitReport {
        tokio::time::timeout(limit, self.exited())
            .await
            .unwrap_or_else(|_| "still running".to_owned())
    }

    /// SIGKILL to the whole process group (browser, zygotes, renderers).
    pub fn kill(&self) {
        if self.exit_report().is_none() {
            // SAFETY: plain syscall; the group id is the browser's pid (process_group(0)).
            unsafe {
                libc::killpg(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }

    /// Waits up to `grace` for a requested exit, then kills the group and waits for the reap.
    /// Returns once every process of the browser's group is gone, so the profile is free.
    pub async fn finish(&self, grace: Duration) -> ExitReport {
        let report = match tokio::time::timeout(grace, self.exited()).await {
            Ok(report) => report,
            Err(_) => {
                log::warn!(
                    "chromium pid {} ignored close for {grace:?}; killing its group",
                    self.pid
                );
                self.kill();
                self.wait_report(Duration::from_secs(5)).await
            }
        };
        self.reap_group().await;
        report
    }

    /// Helpers follow the main process on their own; make sure of it, and wait until no process
    /// of the group is alive. Helpers whose parent (the browser) is gone are reparented to init
    /// and stay zombies until init reaps them, which some inits do only every few seconds (seen
    /// here: about 2 s); a zombie holds no file, so it does not count.
    pub async fn reap_group(&self) {
        let pgid = self.pid as libc::pid_t;
        // SAFETY: plain syscall on our own process group.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
        let deadline = tokio::time::Instant::now() + GROUP_EXIT_WAIT;
        while group_alive(self.pid) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Whether a process of group `pgid` is alive (not a zombie).
fn group_alive(pgid: u32) -> bool {
    // SAFETY: plain syscall; ESRCH means the group is empty (not even a zombie left).
    if unsafe { libc::killpg(pgid as libc::pid_t, 0) } != 0 {
        return false;
    }
    crate::procfs::pids().any(|p| crate::procfs::pgrp(p) == Some(pgid) && crate::procfs::alive(p))
}

/// How long the last helpers of a browser may take to leave the process table after SIGKILL.
const GROUP_EXIT_WAIT: Duration = Duration::from_secs(3);

impl Drop for BrowserProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Switches of both engines: DevTools over the pipe only, no GPU, nothing a session does not
/// use, and a page that looks like a browser with a screen (docs/browser-engines.md).
const SWITCHES: [&str; 9] = [
    "--remote-debugging-pipe",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-breakpad",
    "--mute-audio",
    "--window-size=1280,900",
    "--lang=en-US",
    // `navigator.webdriver` is false, as in a browser someone uses.
    "--disable-blink-features=AutomationControlled",
];

/// The desktop `chromium` only: its headless mode, and its own services a session never uses
/// (the shell has none of them: no first run, sync, default apps, extensions, component updater,
/// metrics or password store).
const CHROMIUM_SWITCHES: [&str; 9] = [
    "--headless=new",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--password-store=basic",
];

fn chromium_args(spec: &LaunchSpec) -> Vec<String> {
    let mut args: Vec<String> = SWITCHES.map(String::from).to_vec();
    if spec.engine == super::Engine::Chromium {
        args.extend(CHROMIUM_SWITCHES.map(String::from));
    }
    // Chromium reads only the last --disable-features / --enable-features: one of each.
    let mut disabled: Vec<&str> = DISABLED_FEATURES.to_vec();
    let mut enabled: Vec<&str> = Vec::new();
    for saver in spec.memory_savers {
        let saver = match *saver {
            MemorySaver::ChromiumOnly(_) if spec.engine != super::Engine::Chromium => continue,
            MemorySaver::ChromiumOnly(inner) => *inner,
            saver => saver,
        };
        match saver {
            MemorySaver::Switch(switch) => args.push(switch.into()),
            MemorySaver::DisableFeature(feature) => disabled.push(feature),
            MemorySaver::EnableFeature(feature) => enabled.push(feature),
            MemorySaver::ChromiumOnly(_) => {}
        }
    }
    args.push(format!("--disable-features={}", disabled.join(",")));
    if !enabled.is_empty() {
        args.push(format!("--enable-features={}", enabled.join(",")));
    }
    args.push(format!("--user-data-dir={}", spec.profile_dir.display()));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Chromium refuses to run its sandbox as root; deploy/ runs the daemon as its own user.
        args.push("--no-sandbox".into());
    }
    args.push("about:blank".into());
    args
}

/// Pids of Chromium processes whose `--user-data-dir` lies under `root` (any depth), read from
/// `/proc`. Used to find browsers left behind on our profiles.
pub fn pids_using_profiles(root: &std::path::Path) -> Vec<u32> {
    crate::procfs::pids()
        .filter(|pid| {
            crate::procfs::cmdline(*pid)
                .iter()
                .any(|arg| profile_arg_under(arg, root))
        })
        .collect()
}

/// True for `--user-data-dir=<path>` with `<path>` at or inside `root`, compared by whole path
/// components: `/srv/sessions-staging/x` is not under `/srv/sessions`.
fn profile_arg_under(arg: &[u8], root: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    arg.strip_prefix(b"--user-data-dir=").is_some_and(|dir| {
        let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(dir));
        dir.starts_with(root)
    })
}

/// Kills every Chromium still running on a profile under `root` (left by a daemon that was
/// SIGKILLed on a host where the parent-death signal could not fire, or started by hand) and
/// waits until they are gone. Run at boot, before anything launches. Returns how many it found.
pub async fn reap_orphans(root: &std::path::Path) -> usize {
    let found = pids_using_profiles(root);
    for pid in &found {
        log::warn!(
            "killing Chromium pid {pid} left running on a profile under {}",
            root.display()
        );
        // SAFETY: plain syscall; a pid that vanished in between gives ESRCH.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let deadline = tokio::time::Instant::now() + GROUP_EXIT_WAIT;
    while !pids_using_profiles(root).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    found.len()
}

/// One browser running on a profile under `SESSIONS_DIR`, with its whole process group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserTree {
    /// The browser process (it leads its group: the daemon launches each in its own).
    pub leader: u32,
    /// Its `--user-data-dir`.
    pub profile: std::path::PathBuf,
    /// Every member of the group: browser, zygotes, renderers, utilities (not all of which
    /// carry the profile on their command line).
    pub pids: Vec<u32>,
}

impl BrowserTree {
    /// The proportional set size of the whole tree, in bytes. Exact, but reads every mapping of
    /// every process (milliseconds per process).
    pub fn pss_bytes(&self) -> u64 {
        self.pids.iter().map(|p| crate::procfs::pss_bytes(*p)).sum()
    }

    /// `(resident, private)` bytes of the whole tree, cheaply: resident counts shared pages in
    /// every process (an upper bound of the PSS), private leaves them out (a lower bound).
    pub fn resident_bytes(&self) -> (u64, u64) {
        self.pids
            .iter()
            .map(|p| crate::procfs::statm_bytes(*p))
            .fold((0, 0), |(r, u), (resident, shared)| {
                (r + resident, u + resident.saturating_sub(shared))
            })
    }
}

/// Every browser on a profile under `root`, in one pass over `/proc`: the processes that carry
/// such a profile and lead their own process group, with the members of each group.
pub fn browser_trees(root: &std::path::Path) -> Vec<BrowserTree> {
    use std::os::unix::ffi::OsStrExt;
    let groups: Vec<(u32, u32)> = crate::procfs::pids()
        .filter_map(|pid| Some((pid, crate::procfs::pgrp(pid)?)))
        .collect();
    let mut trees: Vec<BrowserTree> = groups
        .iter()
        .filter(|(pid, group)| pid == group)
        .filter_map(|(pid, _)| {
            let profile = crate::procfs::cmdline(*pid).into_iter().find_map(|arg| {
                let dir = arg.strip_prefix(b"--user-data-dir=")?;
                let dir = std::path::Path::new(std::ffi::OsStr::from_bytes(dir));
                dir.starts_with(root).then(|| dir.to_path_buf())
            })?;
            Some(BrowserTree {
                leader: *pid,
                profile,
                pids: Vec::new(),
            })
        })
        .collect();
    for tree in &mut trees {
        tree.pids = groups
            .iter()
            .filter(|(_, group)| *group == tree.leader)
            .map(|(pid, _)| *pid)
            .collect();
    }
    trees
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_group_whose_last_members_are_zombies_is_gone() {
        use std::os::unix::process::CommandExt;
        // A helper that outlives its parent becomes init's zombie, which init may reap late.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 0.05 & exec sleep 60"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id();
        std::thread::sleep(Duration::from_millis(300));
        assert!(group_alive(pgid), "the leader runs");
        // SAFETY: plain syscall on the group just made.
        unsafe { libc::killpg(pgid as libc::pid_t, libc::SIGKILL) };
        leader.wait().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_millis(500);
        while group_alive(pgid) {
            assert!(
                std::time::Instant::now() < deadline,
                "a group of zombies counts as gone"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn profiles_match_by_whole_path_components() {
        let root = Path::new("/srv/sessions");
        assert!(profile_arg_under(
            b"--user-data-dir=/srv/sessions/u-slot1",
            root
        ));
        assert!(profile_arg_under(
            b"--user-data-dir=/srv/sessions/a/b",
            root
        ));
        assert!(!profile_arg_under(
            b"--user-data-dir=/srv/sessions-staging/u-slot1",
            root
        ));
        assert!(profile_arg_under(b"--user-data-dir=/srv/sessions", root));
        assert!(!profile_arg_under(b"--user-data-dir=/srv/sessionsX", root));
        assert!(!profile_arg_under(b"/srv/sessions/u-slot1", root));
    }

    #[test]
    fn each_engine_gets_its_own_switches() {
        let spec = |engine| LaunchSpec {
            executable: "/x".into(),
            engine,
            profile_dir: "/p".into(),
            log_key: "k".into(),
            startup_timeout: Duration::from_secs(1),
            memory_savers: MEMORY_SAVERS,
        };
        let shell = chromium_args(&spec(super::super::Engine::Shell));
        let chromium = chromium_args(&spec(super::super::Engine::Chromium));
        for args in [&shell, &chromium] {
            for want in [
                "--remote-debugging-pipe",
                "--disable-blink-features=AutomationControlled",
                "--enable-features=NetworkServiceInProcess2",
                "--disable-software-rasterizer",
            ] {
                assert!(args.iter().any(|a| a == want), "{want}: {args:?}");
            }
        }
        assert!(chromium.iter().any(|a| a == "--headless=new"));
        assert!(!shell
            .iter()
            .any(|a| a.starts_with("--headless") || a == "--no-first-run"));
        let features = |args: &[String]| {
            args.iter()
                .find(|a| a.starts_with("--disable-features="))
                .cloned()
                .unwrap()
        };
        assert!(features(&chromium).contains("SpareRendererForSitePerProcess"));
        assert!(!features(&shell).contains("SpareRendererForSitePerProcess"));
    }

    #[test]
    fn only_the_allow_listed_environment_passes() {
        for ok in [
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "TZ",
            "XDG_RUNTIME_DIR",
            "FONTCONFIG_PATH",
        ] {
            assert!(env_allowed(ok.as_ref()), "{ok}");
        }
        for secret in [
            "API_TOKEN",
            "ADMIN_TOKEN",
            "DATABASE_URL",
            "PATHX",
            "LD_PRELOAD",
            "RUST_LOG",
        ] {
            assert!(!env_allowed(secret.as_ref()), "{secret}");
        }
    }
}
