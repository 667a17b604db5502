//! The scenarios, and the machinery they share: paced logins, the server probe, progress.
//!
//! Every scenario is bounded: by its user count, its duration or message count, the per-login
//! timeout, the drain time, and the run's global deadline (`--max-time`), after which it stops
//! starting work, closes what it opened and reports what it saw.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::client::Connector;
use crate::config::{self, Scenario};
use crate::error::Result;
use crate::metrics::Metrics;
use crate::procstat::{self, ProcSample, ServerProbe};
use crate::report::{ClientReport, ScenarioReport, ServerReport};
use crate::session::{self, CMD_QUEUE, Cmd, Shared, chat_route};

/// The run-wide settings each scenario gets.
#[derive(Debug, Clone)]
pub struct RunEnv {
    pub connector: Connector,
    pub server_pids: Vec<u32>,
    pub deadline: Instant,
    pub progress: bool,
}

/// Per-scenario state.
struct Env {
    run: RunEnv,
    metrics: Arc<Metrics>,
    probe: Option<Arc<Mutex<Probe>>>,
    phase: Arc<Mutex<&'static str>>,
    conn_no: u64,
}

/// The server probe plus the peak RSS seen by the once-a-second sampler.
struct Probe {
    probe: ServerProbe,
    peak_rss_kib: u64,
}

impl Probe {
    fn sample(&mut self) -> ProcSample {
        let s = self.probe.sample();
        self.peak_rss_kib = self.peak_rss_kib.max(s.rss_kib);
        s
    }
}

impl Env {
    fn past_deadline(&self) -> bool {
        Instant::now() >= self.run.deadline
    }

    fn set_phase(&self, p: &'static str) {
        if let Ok(mut g) = self.phase.lock() {
            *g = p;
        }
    }

    fn server_sample(&self) -> Option<ProcSample> {
        let p = self.probe.as_ref()?;
        p.lock().ok().map(|mut p| p.sample())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.run.connector.target.timeout_secs)
    }

    /// Sleeps, but not past the deadline. False when the deadline cut it short.
    async fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        if until > self.run.deadline {
            tokio::time::sleep_until(self.run.deadline.into()).await;
            false
        } else {
            tokio::time::sleep(d).await;
            true
        }
    }
}

/// One measured window: server and client samples at its start.
struct Window {
    start: Instant,
    server: Option<ProcSample>,
    client: ProcSample,
}

impl Window {
    fn open(env: &Env) -> Self {
        Window {
            start: Instant::now(),
            server: env.server_sample(),
            client: procstat::sample_self(),
        }
    }

    /// Closes the window: elapsed seconds, server CPU, client report.
    fn close(&self, env: &Env) -> (f64, Option<(f64, ProcSample)>, ClientReport) {
        let secs = self.start.elapsed().as_secs_f64();
        let server = match (self.server, env.server_sample()) {
            (Some(a), Some(b)) => Some(((b.cpu_secs - a.cpu_secs).max(0.0), b)),
            _ => None,
        };
        let c = procstat::sample_self();
        let cpu = (c.cpu_secs - self.client.cpu_secs).max(0.0);
        let client = ClientReport {
            cpu_secs: cpu,
            cpu_percent: if secs > 0.0 { cpu / secs * 100.0 } else { 0.0 },
            rss_kib: c.rss_kib,
        };
        (secs, server, client)
    }
}

/// Runs one scenario and reports on it.
pub async fn run_scenario(run: &RunEnv, sc: &Scenario) -> Result<ScenarioReport> {
    sc.validate()?;
    let probe = if run.server_pids.is_empty() {
        None
    } else {
        let probe = ServerProbe::new(&run.server_pids)?;
        Some(Arc::new(Mutex::new(Probe {
            probe,
            peak_rss_kib: 0,
        })))
    };
    let env = Env {
        run: run.clone(),
        metrics: Arc::new(Metrics::default()),
        probe,
        phase: Arc::new(Mutex::new("starting")),
        conn_no: 0,
    };
    let started = Instant::now();
    let baseline = env.server_sample();
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = spawn_ticker(&env, sc.name(), Arc::clone(&stop));
    let mut report = ScenarioReport {
        scenario: sc.name().to_string(),
        params: serde_json::to_value(sc).unwrap_or_default(),
        server_addr: run.connector.server.to_string(),
        tls: format!("{:?}", run.connector.target.tls).to_lowercase(),
        mechanisms: Default::default(),
        window_secs: 0.0,
        total_secs: 0.0,
        ops: Default::default(),
        latency: Default::default(),
        errors: Default::default(),
        server: None,
        client: ClientReport::default(),
        notes: Vec::new(),
    };
    let mut env = env;
    let server = match sc {
        Scenario::LoginStorm(p) => login_storm(&mut env, p, &mut report).await,
        Scenario::Idle(p) => idle(&mut env, p, &mut report).await,
        Scenario::Chat(p) => chat(&mut env, p, &mut report).await,
        Scenario::Presence(p) => presence(&mut env, p, &mut report).await,
        Scenario::Mam(_) | Scenario::Muc(_) => unreachable_scenario(sc)?,
    };
    stop.store(true, Ordering::Relaxed);
    ticker.abort();
    let _ = ticker.await;
    if let (Some(mut s), Some(base)) = (server, baseline) {
        s.pids = run.server_pids.clone();
        s.rss_baseline_kib = base.rss_kib;
        if let Some(p) = &env.probe
            && let Ok(p) = p.lock()
        {
            s.rss_peak_kib = p.peak_rss_kib;
        }
        if let (Some(loaded), Some(n)) = (s.rss_loaded_kib, s.sessions)
            && n > 0
        {
            s.rss_kib_per_session = Some((loaded as f64 - base.rss_kib as f64) / n as f64);
        }
        report.server = Some(s);
    }
    if env.past_deadline() {
        report
            .notes
            .push("the run's --max-time deadline cut this scenario short".into());
        env.metrics.error("deadline");
        report.errors = env.metrics.errors();
    }
    report.total_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

fn unreachable_scenario(sc: &Scenario) -> Result<Option<ServerReport>> {
    // validate() already refused these; keep the error path explicit.
    sc.validate().map(|_| None)
}

/// Samples the server once a second (for the peak RSS) and prints progress to stderr.
fn spawn_ticker(env: &Env, name: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let metrics = Arc::clone(&env.metrics);
    let probe = env.probe.clone();
    let phase = Arc::clone(&env.phase);
    let progress = env.run.progress;
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last_cpu: Option<(Instant, f64)> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let server = probe
                .as_ref()
                .and_then(|p| p.lock().ok().map(|mut p| p.sample()));
            if !progress {
                continue;
            }
            let mut line = format!(
                "[{:>5.0}s] {name}/{}: logins {}/{} ok, {} failed, online {}",
                start.elapsed().as_secs_f64(),
                phase.lock().map(|p| *p).unwrap_or("?"),
                metrics.login.succeeded(),
                metrics.login.attempted(),
                metrics.login.failed(),
                metrics.online.load(Ordering::Relaxed),
            );
            if metrics.message.attempted() > 0 {
                line.push_str(&format!(
                    " | msgs {} sent, {} delivered",
                    metrics.message.attempted(),
                    metrics.message.succeeded()
                ));
            }
            if metrics.presence.attempted() > 0 || metrics.subscribe.attempted() > 0 {
                line.push_str(&format!(
                    " | subscribed {}/{} | presence {} sent, {} delivered",
                    metrics.subscribe.succeeded(),
                    metrics.subscribe.attempted(),
                    metrics.presence.attempted(),
                    metrics.presence_delivery.succeeded()
                ));
            }
            if let Some(s) = server {
                let now = Instant::now();
                if let Some((t, c)) = last_cpu {
                    let pct = (s.cpu_secs - c) / now.duration_since(t).as_secs_f64() * 100.0;
                    line.push_str(&format!(" | server cpu {pct:.0}%"));
                }
                last_cpu = Some((now, s.cpu_secs));
                line.push_str(&format!(" rss {:.1} MiB", s.rss_kib as f64 / 1024.0));
            }
            let errors: u64 = metrics.errors().values().sum();
            if errors > 0 {
                line.push_str(&format!(" | errors {errors}"));
            }
            eprintln!("{line}");
        }
    })
}

/// A logged-in session's command channel and task.
struct Live {
    tx: mpsc::Sender<Cmd>,
    task: JoinHandle<()>,
}

/// Logs users `0..users` in at `rate`/s with at most `concurrency` logins in flight; each
/// session then runs its own task. Returns one slot per user (None when the login failed).
async fn ramp_hold(
    env: &mut Env,
    users: u32,
    rate: f64,
    concurrency: u32,
    shared: Arc<Shared>,
) -> Vec<Option<Live>> {
    let sem = Arc::new(Semaphore::new(concurrency as usize));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(u32, Option<mpsc::Sender<Cmd>>)>();
    let mut tasks: Vec<(u32, JoinHandle<()>)> = Vec::with_capacity(users as usize);
    let start = Instant::now();
    let timeout = env.timeout();
    for i in 0..users {
        let at = start + Duration::from_secs_f64(f64::from(i) / rate);
        if at >= env.run.deadline || env.past_deadline() {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            break;
        };
        let connector = env.run.connector.clone();
        let metrics = Arc::clone(&env.metrics);
        let shared = Arc::clone(&shared);
        let done = done_tx.clone();
        let conn_no = env.conn_no;
        env.conn_no += 1;
        tasks.push((
            i,
            tokio::spawn(async move {
                metrics.login.attempt();
                let t0 = Instant::now();
                let res = tokio::time::timeout(timeout, connector.login(i, conn_no)).await;
                drop(permit);
                match res {
                    Ok(Ok(sess)) => {
                        metrics.login.succeed();
                        metrics.login_latency.record(t0.elapsed());
                        metrics.mechanism_used(sess.mech);
                        let (tx, rx) = mpsc::channel(CMD_QUEUE);
                        metrics.online.fetch_add(1, Ordering::Relaxed);
                        let _ = done.send((i, Some(tx)));
                        session::run(sess, i, rx, shared).await;
                    }
                    Ok(Err(e)) => {
                        metrics.login.fail();
                        metrics.error(format!("login/{}", e.kind()));
                        let _ = done.send((i, None));
                    }
                    Err(_) => {
                        metrics.login.fail();
                        metrics.error("login/timeout");
                        let _ = done.send((i, None));
                    }
                }
            }),
        ));
    }
    drop(done_tx);
    let mut txs: Vec<Option<mpsc::Sender<Cmd>>> = (0..users).map(|_| None).collect();
    for _ in 0..tasks.len() {
        match done_rx.recv().await {
            Some((i, tx)) => {
                if let Some(slot) = txs.get_mut(i as usize) {
                    *slot = tx;
                }
            }
            None => break,
        }
    }
    let mut live: Vec<Option<Live>> = (0..users).map(|_| None).collect();
    for (i, task) in tasks {
        let tx = txs.get_mut(i as usize).and_then(Option::take);
        if let (Some(slot), Some(tx)) = (live.get_mut(i as usize), tx) {
            *slot = Some(Live { tx, task });
        }
    }
    live
}

/// Asks every session to close and waits for them (each close is bounded by the timeout).
async fn close_all(env: &Env, live: Vec<Option<Live>>) {
    env.set_phase("closing");
    let mut tasks = Vec::with_capacity(live.len());
    for l in live.into_iter().flatten() {
        let _ = l.tx.send(Cmd::Close).await;
        tasks.push(l.task);
    }
    let limit = env.timeout() + Duration::from_secs(5);
    for t in tasks {
        let _ = tokio::time::timeout(limit, t).await;
    }
}

fn shared(env: &Env, chat: Option<(u32, u32)>, body_bytes: u32, sm: bool) -> Arc<Shared> {
    let pad = if body_bytes == 0 {
        String::new()
    } else {
        let mut p = String::with_capacity(body_bytes as usize);
        p.push(' ');
        p.extend(std::iter::repeat_n(
            'x',
            body_bytes.saturating_sub(1) as usize,
        ));
        p
    };
    Arc::new(Shared {
        target: Arc::clone(&env.run.connector.target),
        metrics: Arc::clone(&env.metrics),
        chat,
        pad,
        sm,
    })
}

fn per(v: f64, n: u64, scale: f64) -> Option<f64> {
    (n > 0).then(|| v * 1000.0 / n as f64 * scale)
}

async fn login_storm(
    env: &mut Env,
    p: &config::LoginStorm,
    report: &mut ScenarioReport,
) -> Option<ServerReport> {
    env.set_phase("logins");
    let total = u64::from(p.users) * u64::from(p.rounds);
    let sem = Arc::new(Semaphore::new(p.concurrency as usize));
    let window = Window::open(env);
    let timeout = env.timeout();
    let mut tasks = Vec::new();
    for n in 0..total {
        let at = window.start + Duration::from_secs_f64(n as f64 / p.rate);
        if at >= env.run.deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let Ok(permit) = Arc::clone(&sem).acquire_owned().await else {
            break;
        };
        let connector = env.run.connector.clone();
        let m = Arc::clone(&env.metrics);
        let idx = u32::try_from(n % u64::from(p.users)).unwrap_or(0);
        let conn_no = env.conn_no;
        env.conn_no += 1;
        tasks.push(tokio::spawn(async move {
            m.login.attempt();
            let t0 = Instant::now();
            match tokio::time::timeout(timeout, connector.login(idx, conn_no)).await {
                Ok(Ok(sess)) => {
                    m.login.succeed();
                    m.login_latency.record(t0.elapsed());
                    m.mechanism_used(sess.mech);
                    m.close.attempt();
                    match tokio::time::timeout(timeout, sess.close()).await {
                        Ok(Ok(())) => m.close.succeed(),
                        Ok(Err(e)) => {
                            m.close.fail();
                            m.error(format!("close/{}", e.kind()));
                        }
                        Err(_) => {
                            m.close.fail();
                            m.error("close/timeout");
                        }
                    }
                }
                Ok(Err(e)) => {
                    m.login.fail();
                    m.error(format!("login/{}", e.kind()));
                }
                Err(_) => {
                    m.login.fail();
                    m.error("login/timeout");
                }
            }
            drop(permit);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (secs, server, client) = window.close(env);
    let m = &env.metrics;
    report.window_secs = secs;
    report.client = client;
    report.collect(m, &[("login", &m.login, secs), ("close", &m.close, secs)]);
    server.map(|(cpu, _)| ServerReport {
        cpu_secs: cpu,
        cpu_percent: cpu / secs * 100.0,
        cpu_ms_per_login: per(cpu, m.login.succeeded(), 1.0),
        ..Default::default()
    })
}

async fn idle(
    env: &mut Env,
    p: &config::Idle,
    report: &mut ScenarioReport,
) -> Option<ServerReport> {
    env.set_phase("logins");
    let sh = shared(env, None, 0, false);
    let window = Window::open(env);
    let live = ramp_hold(env, p.users, p.rate, p.concurrency, sh).await;
    let (login_secs, login_server, client) = window.close(env);
    env.set_phase("settling");
    env.sleep(Duration::from_secs_f64(p.settle_secs)).await;
    let m = Arc::clone(&env.metrics);
    let sessions = m.online.load(Ordering::Relaxed);
    let loaded = env.server_sample();
    env.set_phase("holding");
    let hold_until = Instant::now() + Duration::from_secs_f64(p.hold_secs);
    while Instant::now() < hold_until && !env.past_deadline() {
        let left = hold_until.saturating_duration_since(Instant::now());
        env.sleep(left.min(Duration::from_secs(45))).await;
        if Instant::now() < hold_until {
            for l in live.iter().flatten() {
                let _ = l.tx.try_send(Cmd::Keepalive);
            }
        }
    }
    let still = m.online.load(Ordering::Relaxed);
    if still < sessions {
        report.notes.push(format!(
            "{} sessions were lost while idle",
            sessions - still
        ));
    }
    close_all(env, live).await;
    report.window_secs = login_secs;
    report.client = client;
    report.collect(
        &m,
        &[("login", &m.login, login_secs), ("close", &m.close, 0.0)],
    );
    report.notes.push(format!(
        "window = the login ramp; rss sampled {:.1} s after the last login with {sessions} sessions online",
        p.settle_secs
    ));
    login_server.map(|(cpu, _)| ServerReport {
        cpu_secs: cpu,
        cpu_percent: cpu / login_secs * 100.0,
        rss_loaded_kib: loaded.map(|s| s.rss_kib),
        sessions: Some(sessions),
        cpu_ms_per_login: per(cpu, m.login.succeeded(), 1.0),
        ..Default::default()
    })
}

async fn chat(
    env: &mut Env,
    p: &config::Chat,
    report: &mut ScenarioReport,
) -> Option<ServerReport> {
    env.set_phase("logins");
    let sh = shared(env, Some((p.users, p.contacts)), p.body_bytes, p.sm);
    let ramp_start = Instant::now();
    let live = ramp_hold(env, p.users, p.login_rate, p.concurrency, sh).await;
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let m = Arc::clone(&env.metrics);
    let sessions = m.online.load(Ordering::Relaxed);
    env.set_phase("settling");
    env.sleep(Duration::from_secs_f64(p.settle_secs)).await;
    env.set_phase("sending");
    let planned = (p.rate * p.duration_secs).ceil() as u64;
    let total = p.messages.map_or(planned, |n| n.min(planned));
    let window = Window::open(env);
    m.message_latency.reset_window();
    let mut seq = 0u64;
    let mut next_tick = window.start + Duration::from_secs(1);
    let send_limit = window.start + Duration::from_secs_f64(p.duration_secs);
    while seq < total && !env.past_deadline() {
        let now = Instant::now();
        let due = ((now - window.start).as_secs_f64() * p.rate) as u64;
        while seq < due.min(total) {
            let (from, to) = chat_route(seq, p.users, p.contacts);
            m.message.attempt();
            match live.get(from as usize).and_then(Option::as_ref) {
                Some(l) => match l.tx.try_send(Cmd::Chat { to, seq }) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        m.message.fail();
                        m.error("message/client-backlog");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        m.message.fail();
                        m.error("message/sender-gone");
                    }
                },
                None => {
                    m.message.fail();
                    m.error("message/sender-not-logged-in");
                }
            }
            seq += 1;
        }
        if now >= send_limit {
            break;
        }
        if now >= next_tick {
            m.message_latency.tick_window();
            next_tick += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    env.set_phase("draining");
    let drain_until = Instant::now() + Duration::from_secs_f64(p.drain_secs);
    while m.message.succeeded() + m.message.failed() < m.message.attempted()
        && Instant::now() < drain_until
        && !env.past_deadline()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if Instant::now() >= next_tick {
            m.message_latency.tick_window();
            next_tick += Duration::from_secs(1);
        }
    }
    let (secs, server, client) = window.close(env);
    let lost = m
        .message
        .attempted()
        .saturating_sub(m.message.succeeded() + m.message.failed());
    if lost > 0 {
        m.message.fail_n(lost);
        m.error_n("message/undelivered", lost);
        report.notes.push(format!(
            "{lost} messages were not delivered within the drain time"
        ));
    }
    close_all(env, live).await;
    report.window_secs = secs;
    report.client = client;
    report.collect(
        &m,
        &[
            ("login", &m.login, ramp_secs),
            ("message", &m.message, secs),
            ("close", &m.close, 0.0),
        ],
    );
    report.notes.push(format!(
        "window = sending + drain ({sessions} sessions online); login counts are for the setup"
    ));
    server.map(|(cpu, _)| ServerReport {
        cpu_secs: cpu,
        cpu_percent: cpu / secs * 100.0,
        sessions: Some(sessions),
        cpu_ms_per_1000_messages: per(cpu, m.message.succeeded(), 1000.0),
        ..Default::default()
    })
}

async fn presence(
    env: &mut Env,
    p: &config::Presence,
    report: &mut ScenarioReport,
) -> Option<ServerReport> {
    env.set_phase("logins");
    let sh = shared(env, None, 0, false);
    let ramp_start = Instant::now();
    let live = ramp_hold(env, p.users, p.login_rate, p.concurrency, sh).await;
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let m = Arc::clone(&env.metrics);
    let sessions = m.online.load(Ordering::Relaxed);

    // Setup: mutual subscriptions between each user and its K successors.
    env.set_phase("subscribing");
    let setup_start = Instant::now();
    let n = p.users;
    for (i, l) in live.iter().enumerate() {
        let Some(l) = l else { continue };
        let i = u32::try_from(i).unwrap_or(0);
        for k in 1..=p.contacts {
            for to in [(i + k) % n, (i + n - k) % n] {
                m.subscribe.attempt();
                if l.tx.send(Cmd::Subscribe { to }).await.is_err() {
                    m.subscribe.fail();
                }
            }
        }
    }
    let setup_until = Instant::now() + Duration::from_secs_f64(p.setup_timeout_secs);
    while m.subscribe.succeeded() + m.subscribe.failed() < m.subscribe.attempted()
        && Instant::now() < setup_until
        && !env.past_deadline()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let subscribed = m.subscribe.succeeded();
    let pending = m
        .subscribe
        .attempted()
        .saturating_sub(subscribed + m.subscribe.failed());
    m.subscribe.fail_n(pending);
    // Let the presence probes and broadcasts that follow subscriptions settle.
    env.sleep(Duration::from_secs(1)).await;

    env.set_phase("churning");
    let total = (p.rate * p.duration_secs).ceil() as u64;
    let window = Window::open(env);
    m.presence_latency.reset_window();
    let fanout = u64::from(p.contacts) * 2;
    let mut seq = 0u64;
    let mut next_tick = window.start + Duration::from_secs(1);
    while seq < total && !env.past_deadline() {
        let now = Instant::now();
        let due = ((now - window.start).as_secs_f64() * p.rate) as u64;
        while seq < due.min(total) {
            let from = (seq % u64::from(n)) as usize;
            m.presence.attempt();
            match live.get(from).and_then(Option::as_ref) {
                Some(l) => {
                    if l.tx.try_send(Cmd::Presence { seq }).is_ok() {
                        m.presence_delivery.attempt_n(fanout);
                    } else {
                        m.presence.fail();
                        m.error("presence/client-backlog");
                    }
                }
                None => {
                    m.presence.fail();
                    m.error("presence/sender-not-logged-in");
                }
            }
            seq += 1;
        }
        if now >= next_tick {
            m.presence_latency.tick_window();
            next_tick += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    env.set_phase("draining");
    let drain_until = Instant::now() + Duration::from_secs_f64(p.drain_secs);
    while m.presence_delivery.succeeded() < m.presence_delivery.attempted()
        && Instant::now() < drain_until
        && !env.past_deadline()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (secs, server, client) = window.close(env);
    let missing = m
        .presence_delivery
        .attempted()
        .saturating_sub(m.presence_delivery.succeeded());
    m.presence_delivery.fail_n(missing);
    let no_echo = m
        .presence
        .attempted()
        .saturating_sub(m.presence.succeeded() + m.presence.failed());
    m.presence.fail_n(no_echo);
    close_all(env, live).await;
    report.window_secs = secs;
    report.client = client;
    report.collect(
        &m,
        &[
            ("login", &m.login, ramp_secs),
            ("subscribe", &m.subscribe, setup_secs),
            ("presence", &m.presence, secs),
            ("presence-delivery", &m.presence_delivery, secs),
            ("close", &m.close, 0.0),
        ],
    );
    report.notes.push(format!(
        "window = churn + drain ({sessions} sessions); a presence update succeeds when its echo \
         to the sender arrives; each is expected at {fanout} contacts; subscriptions confirmed \
         {subscribed} of {}",
        u64::from(n) * fanout
    ));
    server.map(|(cpu, _)| ServerReport {
        cpu_secs: cpu,
        cpu_percent: cpu / secs * 100.0,
        sessions: Some(sessions),
        cpu_ms_per_1000_presence_deliveries: per(cpu, m.presence_delivery.succeeded(), 1000.0),
        ..Default::default()
    })
}
