//! Child processes on their own thread: notify hooks, track scripts and service operations.
//!
//! Spawning a process, waiting for it and killing it on timeout never happens on the control
//! plane thread, so a slow `fork` or a stuck hook cannot delay an advert. Hooks of one instance
//! run strictly one after another, in transition order; different instances run independently.
//! An instance's queue is bounded ([`QUEUE`]): a hook that keeps timing out while the
//! instance flaps loses the newest jobs (logged and counted as dropped by the `hooks`
//! consumer), it never holds up the control loop. A failed hook is an event.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duet_admin::{EventKind, Events};
use tokio::process::Command;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// One hook run.
#[derive(Debug, Clone)]
pub struct HookJob {
    /// Instance name (hooks of one instance are serialised).
    pub instance: String,
    /// Which hook, for logs: `notify`, `notify_master`, ...
    pub hook: &'static str,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Kill after this long.
    pub timeout: Duration,
}

/// Result of one track script run.
#[derive(Debug, Clone)]
pub struct ScriptResult {
    /// Script name.
    pub name: String,
    /// Exit status 0 within the timeout.
    pub passed: bool,
    /// Why it failed, for logs.
    pub detail: String,
}

/// Hook runs waiting per instance, at most.
pub const QUEUE: usize = 64;

/// Handle to the process thread.
#[derive(Debug, Clone)]
pub struct Hooks {
    rt: Arc<Runtime>,
    queues: Arc<Mutex<HashMap<String, mpsc::Sender<HookJob>>>>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
    events: Arc<Events>,
}

impl Hooks {
    /// Starts the thread; failed hooks are told to `events`.
    pub fn start(events: Arc<Events>) -> std::io::Result<Hooks> {
        let rt = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
        );
        let driver = rt.clone();
        std::thread::Builder::new()
            .name("duet-hooks".into())
            .spawn(move || driver.block_on(std::future::pending::<()>()))?;
        Ok(Hooks {
            rt,
            queues: Default::default(),
            pending: Default::default(),
            events,
        })
    }

    /// Queues a hook behind the instance's earlier hooks.
    pub fn submit(&self, job: HookJob) {
        use std::sync::atomic::Ordering;
        self.pending.fetch_add(1, Ordering::SeqCst);
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let tx = queues.entry(job.instance.clone()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<HookJob>(QUEUE);
            let pending = self.pending.clone();
            let events = self.events.clone();
            self.rt.spawn(async move {
                while let Some(job) = rx.recv().await {
                    if let Err(detail) = run_hook(&job).await {
                        events.emit(EventKind::Hook {
                            instance: job.instance.clone(),
                            hook: job.hook.to_string(),
                            detail,
                        });
                    }
                    pending.fetch_sub(1, Ordering::SeqCst);
                }
            });
            tx
        });
        if let Err(e) = tx.try_send(job) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            let job = e.into_inner();
            tracing::warn!(
                "{}: {} dropped: {QUEUE} hook runs are waiting already",
                job.instance,
                job.hook
            );
            self.events.dropped("hooks", 1);
        }
    }

    /// Waits until every queued hook has finished, or `limit` passes. Used on shutdown.
    pub fn wait_idle(&self, limit: Duration) {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + limit;
        while self.pending.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `job` on the process thread (service operations: their processes never start on
    /// the control loop's thread).
    pub fn spawn<F>(&self, job: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt.spawn(job)
    }

    /// Runs a track script every `interval` (first run at once), sending each result to `tx`.
    pub fn start_script(
        &self,
        name: String,
        argv: Vec<String>,
        interval: Duration,
        timeout: Duration,
        tx: mpsc::UnboundedSender<ScriptResult>,
    ) -> AbortHandle {
        self.rt
            .spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let (passed, detail) = run_script(&argv, timeout).await;
                    let result = ScriptResult {
                        name: name.clone(),
                        passed,
                        detail,
                    };
                    if tx.send(result).is_err() {
                        return;
                    }
                }
            })
            .abort_handle()
    }
}

/// Runs one hook; on failure, says what went wrong (already logged).
async fn run_hook(job: &HookJob) -> Result<(), String> {
    let Some((program, args)) = job.argv.split_first() else {
        return Ok(());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .process_group(0);
    let started = std::time::Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let detail = format!("{program:?} could not start: {e}");
            tracing::warn!("{}: {} {detail}", job.instance, job.hook);
            return Err(detail);
        }
    };
    let detail = match tokio::time::timeout(job.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            tracing::debug!(
                "{}: {} finished in {:?}",
                job.instance,
                job.hook,
                started.elapsed()
            );
            return Ok(());
        }
        Ok(Ok(status)) => format!("{program:?} {status}"),
        Ok(Err(e)) => format!("{program:?}: {e}"),
        Err(_) => {
            kill_group(&child);
            let _ = child.kill().await;
            format!(
                "{program:?} still running after {}; killed",
                duet_time::format_duration(job.timeout)
            )
        }
    };
    tracing::warn!("{}: {} {detail}", job.instance, job.hook);
    Err(detail)
}

/// Runs a script once: passed when it exits 0 within `timeout`.
pub async fn run_script(argv: &[String], timeout: Duration) -> (bool, String) {
    match run_command(argv, &[], timeout).await {
        Ok(()) => (true, String::new()),
        Err(why) => (false, why),
    }
}

/// Runs `argv` with `env` added, in a process group of its own: `Ok` when it exits 0 within
/// `timeout`; otherwise why, with the last line it wrote on stderr. On timeout the whole
/// group is killed, so a shell's children go too.
pub async fn run_command(
    argv: &[String],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    // stderr is read beside the wait, not to its end: a start command whose daemon keeps
    // stderr open must not look like a timeout.
    let text = Arc::new(Mutex::new(Vec::new()));
    let reader = child.stderr.take().map(|mut s| {
        let text = text.clone();
        tokio::spawn(async move {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = s.read(&mut chunk).await {
                let mut t = text.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() < 65_536 {
                    t.extend_from_slice(&chunk[..n]);
                }
            }
        })
    });
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if let Some(r) = reader {
        // What the child wrote before it exited is there, or arrives at once; a daemon it
        // left holding stderr is not waited for.
        let abort = r.abort_handle();
        let _ = tokio::time::timeout(Duration::from_millis(50), r).await;
        abort.abort();
    }
    let status = match waited {
        Ok(Ok(status)) if status.success() => return Ok(()),
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => {
            kill_group(&child);
            let _ = child.kill().await;
            return Err(format!(
                "timed out after {}",
                duet_time::format_duration(timeout)
            ));
        }
    };
    let text = text.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let text = String::from_utf8_lossy(&text);
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(last) => Err(format!(
            "{status}: {}",
            last.chars().take(200).collect::<String>()
        )),
        None => Err(status),
    }
}

/// Kills the whole process group of a hook, so a shell script's children go too.
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = duet_sys::process::send_signal(pid, duet_sys::process::SIGKILL, true);
    }
}

#[cfg(test)]
mod command_tests {
    use super::*;

    fn run(script: &str, timeout: Duration) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let argv = ["/bin/sh".to_string(), "-c".into(), script.into()];
        rt.block_on(run_command(&argv, &[("DUET_SERVICE", "app")], timeout))
    }

    #[test]
    fn a_failure_says_its_status_and_last_stderr_line() {
        assert_eq!(
            run(
                "echo first >&2; echo \"$DUET_SERVICE broke\" >&2; exit 3",
                Duration::from_secs(5)
            ),
            Err("exit status: 3: app broke".into())
        );
        assert_eq!(run("exit 0", Duration::from_secs(5)), Ok(()));
        let e = run("sleep 5", Duration::from_millis(200)).unwrap_err();
        assert!(e.starts_with("timed out after"), "{e}");
    }

    #[test]
    fn a_command_that_leaves_a_daemon_holding_stderr_is_not_waited_for() {
        let start = std::time::Instant::now();
        assert_eq!(run("sleep 3 & exit 0", Duration::from_secs(2)), Ok(()));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
