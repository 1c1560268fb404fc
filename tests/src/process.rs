//! Server child processes: launching, readiness, logs and shutdown.
//!
//! Design: every server is one child process whose stdout and stderr go to a log file in the
//! server's temp dir. Startup is "spawn, then poll a probe until it succeeds" under a deadline
//! ([`ServerProcess::await_ready`]); the loop also watches the child and its log, so a server
//! that exits fails at once with the log tail in the error, and a server that could not bind
//! its port is reported as [`Startup::PortInUse`] so the caller retries on another port.
//!
//! Failure model: dropping a [`ServerProcess`] sends its stop signal, waits a short grace
//! period, then SIGKILLs and reaps it. Because destructors do not run when the test process
//! is killed, servers are launched through `setpriv --pdeathsig` (util-linux) when it exists:
//! the kernel then signals the server when the thread that spawned it exits. Spawn servers
//! from a test's own task, not from `spawn_blocking`, whose threads exit when idle. Servers
//! get a process group of their own, so a signal to the test's group (nextest killing a hung
//! test) reaches them only through that parent-death signal, which for PostgreSQL is SIGQUIT
//! (a clean immediate shutdown) rather than a SIGKILL that would leak its shared memory.

use anyhow::{anyhow, bail, Context};
use rustix::process::{kill_process, Pid, Signal};
use std::fs::File;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// Time between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The longest one readiness probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a stopping server may take before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// How long a SIGSTOPped server may take to stop all its threads.
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of the server log quoted in startup errors.
const LOG_TAIL_LINES: usize = 40;

/// How many ports a server tries before giving up.
pub(crate) const PORT_ATTEMPTS: usize = 3;

/// Log lines by which PostgreSQL, MariaDB and tansu report a port taken by someone else.
const PORT_IN_USE_MARKERS: [&str; 3] =
    ["Address already in use", "AddrInUse", "Bind on TCP/IP port"];

/// An operating-system account that servers refusing to run as root are started under.
#[derive(Debug, Clone)]
pub(crate) struct OsUser {
    /// Login name.
    pub(crate) name: String,
    /// Numeric user id.
    pub(crate) uid: u32,
    /// Numeric primary group id.
    pub(crate) gid: u32,
}

impl OsUser {
    /// Looks an account up through the name service (`getent passwd NAME`).
    pub(crate) fn lookup(name: &str) -> anyhow::Result<OsUser> {
        let output = Command::new("getent")
            .args(["passwd", name])
            .output()
            .context("running getent")?;
        let line = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = line.trim().split(':').collect();
        if !output.status.success() || fields.len() < 4 {
            bail!(
                "there is no operating-system user {name:?} (getent passwd {name} found nothing)"
            );
        }
        Ok(OsUser {
            name: name.to_owned(),
            uid: fields[2]
                .parse()
                .with_context(|| format!("uid of {name}"))?,
            gid: fields[3]
                .parse()
                .with_context(|| format!("gid of {name}"))?,
        })
    }

    /// Makes `path` belong to this user.
    pub(crate) fn chown(&self, path: &Path) -> anyhow::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("giving {} to {}", path.display(), self.name))
    }
}

/// True when this process runs as root.
pub(crate) fn running_as_root() -> bool {
    rustix::process::getuid().is_root()
}

/// Finds an executable by name on PATH and then in `extra_dirs`.
pub(crate) fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Finds a program `scripts/install-deps.sh` caches: `$<env>`, then `cached` (relative to
/// $HOME, and to /root), then `name` on PATH.
pub(crate) fn find_installed(name: &str, env: &str, cached: &str) -> anyhow::Result<PathBuf> {
    let from_env = std::env::var_os(env).map(PathBuf::from);
    let mut places: Vec<PathBuf> = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(cached))
        .into_iter()
        .collect();
    let root_cached = PathBuf::from("/root").join(cached);
    if !places.contains(&root_cached) {
        places.push(root_cached);
    }
    if let Some(found) = from_env
        .iter()
        .chain(places.iter())
        .find(|p| is_executable(p))
    {
        return Ok(found.clone());
    }
    if let Some(found) = find_program(name, &[]) {
        return Ok(found);
    }
    let env_text = match &from_env {
        Some(path) => format!("${env} ({})", path.display()),
        None => format!("${env} (not set)"),
    };
    let places: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
    bail!(
        "{name} not found: looked in {env_text}, {} and `{name}` on PATH; run scripts/install-deps.sh",
        places.join(", ")
    )
}

/// True when `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Builds the command that launches a server: as `user` when given, with a parent-death signal
/// (`death_signal` is a name `setpriv` knows, such as "KILL" or "QUIT") when `setpriv` exists.
pub(crate) fn server_command(program: &Path, user: Option<&OsUser>, death_signal: &str) -> Command {
    let mut command = match find_program("setpriv", &["/usr/bin", "/bin"]) {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command
                .arg(format!("--pdeathsig={death_signal}"))
                .arg("--")
                .arg(program);
            command
        }
        None => Command::new(program),
    };
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid);
    }
    // A process group of its own: a signal to the test's group (nextest killing a hung test,
    // Ctrl-C) must not SIGKILL the server, or PostgreSQL would leak its shared memory; the
    // parent-death signal stops it properly instead.
    command.process_group(0);
    command
}

/// How a server's startup ended when it did not fail outright.
pub(crate) enum Startup {
    /// The probe succeeded.
    Ready,
    /// The server could not bind its port; the text is its log tail.
    PortInUse(String),
}

/// One running server process, stopped and reaped on drop.
pub(crate) struct ServerProcess {
    /// What the server is, for messages ("postgres", "mariadbd", "tansu").
    name: &'static str,
    /// The child; `None` once stopped.
    child: Option<Child>,
    /// The file that receives the child's stdout and stderr.
    log: PathBuf,
    /// The signal that asks the server to stop.
    stop_signal: Signal,
}

impl ServerProcess {
    /// Spawns `command` with stdout and stderr written to `log` (emptied first).
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        log: &Path,
        stop_signal: Signal,
    ) -> anyhow::Result<ServerProcess> {
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        tracing::debug!(server = name, pid = child.id(), "server process started");
        Ok(ServerProcess {
            name,
            child: Some(child),
            log: log.to_owned(),
            stop_signal,
        })
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> anyhow::Result<Pid> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("{} is stopped", self.name))?;
        Ok(Pid::from_child(child))
    }

    /// Sends `signal` to the server.
    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill_process(self.pid()?, signal)
            .with_context(|| format!("sending {signal:?} to {}", self.name))
    }

    /// SIGSTOPs the server and returns once every one of its threads has stopped.
    ///
    /// `kill` only queues the signal: a thread running on another core keeps going for a moment,
    /// so the thread states in /proc are polled until they all read "stopped".
    pub(crate) fn suspend(&self) -> anyhow::Result<()> {
        self.signal(Signal::STOP)?;
        let task_dir = PathBuf::from(format!("/proc/{}/task", self.pid()?.as_raw_nonzero()));
        let deadline = std::time::Instant::now() + SUSPEND_TIMEOUT;
        loop {
            match all_threads_stopped(&task_dir) {
                Ok(true) => return Ok(()),
                Ok(false) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Ok(false) => bail!(
                    "{} did not stop within {SUSPEND_TIMEOUT:?} of SIGSTOP",
                    self.name
                ),
                Err(error) => {
                    return Err(error.context(format!("reading the thread states of {}", self.name)))
                }
            }
        }
    }

    /// SIGCONTs a suspended server.
    pub(crate) fn unsuspend(&self) -> anyhow::Result<()> {
        self.signal(Signal::CONT)
    }

    /// The last lines of the server's log.
    pub(crate) fn log_tail(&self) -> String {
        let text =
            std::fs::read(&self.log).map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
        match text {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
            }
            Err(error) => format!("(cannot read {}: {error})", self.log.display()),
        }
    }

    /// Polls `probe` until it succeeds, the server exits or `timeout` passes.
    ///
    /// Returns [`Startup::PortInUse`] when the log says the port was taken; other failures are
    /// errors that quote the log.
    pub(crate) async fn await_ready<P, Fut>(
        &mut self,
        timeout: Duration,
        mut probe: P,
    ) -> anyhow::Result<Startup>
    where
        P: FnMut() -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            // The probe may hang on a port someone else holds, so the log and the child are
            // watched meanwhile: a failed bind or an exit ends the wait at once.
            let probed = tokio::select! {
                outcome = tokio::time::timeout(PROBE_TIMEOUT, probe()) => match outcome {
                    Ok(outcome) => Some(outcome),
                    Err(_) => Some(Err(anyhow!("the probe did not answer within {PROBE_TIMEOUT:?}"))),
                },
                () = self.visible_failure() => None,
            };
            let error = match probed {
                Some(Ok(())) => return Ok(Startup::Ready),
                Some(Err(error)) => Some(error),
                None => None,
            };
            let tail = self.log_tail();
            if port_in_use(&tail) {
                self.stop();
                return Ok(Startup::PortInUse(tail));
            }
            if let Some(status) = self.exit_status()? {
                bail!(
                    "{} exited during startup ({status}); its log ends with:\n{tail}",
                    self.name
                );
            }
            if Instant::now() >= deadline {
                self.stop();
                let context = format!(
                    "{} was not ready after {timeout:?}; its log ends with:\n{tail}",
                    self.name
                );
                return Err(match error {
                    Some(error) => error.context(context),
                    None => anyhow!(context),
                });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Returns once the log reports a failed bind or the process has exited.
    async fn visible_failure(&mut self) {
        loop {
            if port_in_use(&self.log_tail()) || !matches!(self.exit_status(), Ok(None)) {
                return;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// The exit status if the server has exited.
    fn exit_status(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child
                .try_wait()
                .with_context(|| format!("checking on {}", self.name)),
            None => bail!("{} is stopped", self.name),
        }
    }

    /// Stops the server: its stop signal (and SIGCONT, in case it is paused), a grace period,
    /// then SIGKILL. Waits for the process to end. Does nothing when already stopped.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_child(&child);
        let name = self.name;
        if matches!(child.try_wait(), Ok(None)) && self.stop_signal != Signal::KILL {
            let _ = kill_process(pid, self.stop_signal);
            let _ = kill_process(pid, Signal::CONT);
            let deadline = std::time::Instant::now() + STOP_GRACE;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if matches!(child.try_wait(), Ok(None)) {
            if let Err(error) = child.kill() {
                tracing::warn!(server = name, %error, "cannot kill server process");
            }
        }
        match child.wait() {
            Ok(status) => tracing::debug!(server = name, %status, "server process stopped"),
            Err(error) => tracing::warn!(server = name, %error, "cannot reap server process"),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when a server log says the port was taken.
fn port_in_use(log: &str) -> bool {
    PORT_IN_USE_MARKERS
        .iter()
        .any(|marker| log.contains(marker))
}

/// True when every thread listed in `task_dir` (/proc/PID/task) is stopped (state T or t).
fn all_threads_stopped(task_dir: &Path) -> anyhow::Result<bool> {
    for entry in std::fs::read_dir(task_dir)? {
        let stat = match std::fs::read_to_string(entry?.path().join("stat")) {
            Ok(stat) => stat,
            // The thread ended after the directory was listed.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error.into()),
        };
        // The state follows the command name, which is in parentheses and may contain spaces.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Shortens `sql` for error messages.
pub(crate) fn abbreviate(sql: &str) -> String {
    const MAX: usize = 200;
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}
