//! relais-loadtest: the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use loadtest::config::{self, Mech, Scenario, ScenarioFile, Target, TlsMode};
use loadtest::{RunOptions, report};

/// A standards-only XMPP load generator (TLS, SCRAM, bind, roster, presence) that works
/// against any server. Accounts are PREFIX + n @ DOMAIN (n counted from --first-user), all with
/// the same password.
#[derive(Parser, Debug)]
#[command(name = "relais-loadtest", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Args, Debug)]
struct Global {
    /// host:port of the server's c2s listener, or a comma list of several (a cluster's edges:
    /// user n connects to entry n modulo the list) [default: 127.0.0.1:5222]
    #[arg(long, global = true)]
    server: Option<String>,
    /// XMPP domain [default: localhost]
    #[arg(long, global = true)]
    domain: Option<String>,
    /// STARTTLS or direct TLS [default: starttls]
    #[arg(long, global = true, value_enum)]
    tls: Option<TlsMode>,
    /// SASL mechanism [default: auto = SCRAM-SHA-256 if offered, else SCRAM-SHA-1]
    #[arg(long, global = true, value_enum)]
    mech: Option<Mech>,
    /// Account name prefix [default: user]
    #[arg(long, global = true)]
    user_prefix: Option<String>,
    /// Number of the first account [default: 1]
    #[arg(long, global = true)]
    first_user: Option<u32>,
    /// Password of every account [default: password]
    #[arg(
        long,
        global = true,
        env = "RELAIS_LOADTEST_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Spread connections over 127.0.0.1..=127.0.0.N [default: 4]
    #[arg(long, global = true)]
    sources: Option<u8>,
    /// Timeout of each login and close, seconds [default: 30]
    #[arg(long, global = true)]
    timeout: Option<f64>,
    /// Allow TLS session resumption (default: every login is a full handshake)
    #[arg(long, global = true)]
    tls_resume: bool,
    /// Skip the roster get during login
    #[arg(long, global = true)]
    no_roster: bool,
    /// Skip initial presence during login
    #[arg(long, global = true)]
    no_presence: bool,
    /// A server process to sample CPU and RSS from (/proc); repeat for several
    #[arg(long = "server-pid", global = true)]
    server_pids: Vec<u32>,
    /// Write the JSON report here ("-" for stdout; the table then goes to stderr)
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Hard bound on the whole run, seconds
    #[arg(long, global = true, default_value_t = 900.0)]
    max_time: f64,
    /// No progress lines on stderr
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Exit with status 3 when any operation failed
    #[arg(long, global = true)]
    strict: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N users log in at R logins/s (TLS, SASL, bind, roster, presence, close)
    LoginStorm(config::LoginStorm),
    /// Log N sessions in and hold them (RSS per session)
    Idle(config::Idle),
    /// 1:1 chat at a fixed total rate, with delivery latency
    Chat(config::Chat),
    /// Presence updates between mutually subscribed contacts
    Presence(config::Presence),
    /// MAM page queries (not yet implemented)
    Mam(NotYetArgs),
    /// Archive store benchmark: append rate, then MAM page latency (no server involved)
    Archive(loadtest::archive::ArchiveBench),
    /// MUC fan-out (not yet implemented)
    Muc(NotYetArgs),
    /// Run the scenarios of a TOML file, in order
    Run {
        /// The scenario file
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct NotYetArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

fn apply(mut t: Target, g: &Global) -> Target {
    if let Some(v) = &g.server {
        t.server = v.clone();
    }
    if let Some(v) = &g.domain {
        t.domain = v.clone();
    }
    if let Some(v) = g.tls {
        t.tls = v;
    }
    if let Some(v) = g.mech {
        t.mech = v;
    }
    if let Some(v) = &g.user_prefix {
        t.user_prefix = v.clone();
    }
    if let Some(v) = g.first_user {
        t.first_user = v;
    }
    if let Some(v) = &g.password {
        t.password = v.clone();
    }
    if let Some(v) = g.sources {
        t.sources = v;
    }
    if let Some(v) = g.timeout {
        t.timeout_secs = v;
    }
    if g.tls_resume {
        t.tls_resume = true;
    }
    if g.no_roster {
        t.roster = false;
    }
    if g.no_presence {
        t.presence = false;
    }
    t
}

fn options(cli: Cli) -> loadtest::Result<(RunOptions, Option<PathBuf>, bool)> {
    let (base, scenarios) = match cli.cmd {
        Command::LoginStorm(s) => (Target::default(), vec![Scenario::LoginStorm(s)]),
        Command::Idle(s) => (Target::default(), vec![Scenario::Idle(s)]),
        Command::Chat(s) => (Target::default(), vec![Scenario::Chat(s)]),
        Command::Presence(s) => (Target::default(), vec![Scenario::Presence(s)]),
        Command::Mam(_) => return Err(loadtest::Error::Unsupported("mam (MAM page queries)")),
        Command::Archive(_) => {
            return Err(loadtest::Error::Config(
                "archive runs on its own (see run_archive)".into(),
            ));
        }
        Command::Muc(_) => return Err(loadtest::Error::Unsupported("muc (MUC fan-out)")),
        Command::Run { file } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                loadtest::Error::Config(format!("cannot read {}: {e}", file.display()))
            })?;
            let f = ScenarioFile::parse(&text)?;
            (f.target()?, f.scenario)
        }
    };
    let g = cli.global;
    if !(g.max_time.is_finite() && g.max_time > 0.0 && g.max_time <= 7.0 * 86_400.0) {
        return Err(loadtest::Error::Config(
            "--max-time must be in (0, 604800]".into(),
        ));
    }
    let target = apply(base, &g);
    target.validate()?;
    let opts = RunOptions {
        target,
        scenarios,
        server_pids: g.server_pids.clone(),
        max_time: Duration::from_secs_f64(g.max_time),
        progress: !g.quiet,
    };
    Ok((opts, g.json, g.strict))
}

/// `relais-loadtest archive`: runs the storage benchmark and prints its JSON report.
fn run_archive(args: &loadtest::archive::ArchiveBench, g: &Global) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relais-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let report = match rt.block_on(loadtest::archive::run(args, !g.quiet)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relais-loadtest: {e}");
            return ExitCode::from(1);
        }
    };
    let text = match serde_json::to_string_pretty(&report) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("relais-loadtest: cannot serialize the report: {e}");
            return ExitCode::from(1);
        }
    };
    match g.json.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            if let Err(e) = std::fs::write(p, text + "\n") {
                eprintln!("relais-loadtest: cannot write {}: {e}", p.display());
                return ExitCode::from(1);
            }
        }
        _ => println!("{text}"),
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Archive(args) = &cli.cmd {
        return run_archive(args, &cli.global);
    }
    let (opts, json, strict) = match options(cli) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("relais-loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relais-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(loadtest::run(opts));
    // Stop at once: sessions cut short by the deadline must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    let run = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("relais-loadtest: {e}");
            return ExitCode::from(1);
        }
    };
    let table = report::render(&run);
    let json_text = match serde_json::to_string_pretty(&run) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("relais-loadtest: cannot serialize the report: {e}");
            return ExitCode::from(1);
        }
    };
    match json.as_deref() {
        Some(p) if p.as_os_str() == "-" => {
            eprint!("{table}");
            println!("{json_text}");
        }
        Some(p) => {
            print!("{table}");
            if let Err(e) = std::fs::write(p, json_text + "\n") {
                eprintln!("relais-loadtest: cannot write {}: {e}", p.display());
                return ExitCode::from(1);
            }
        }
        None => print!("{table}"),
    }
    if strict && !run.scenarios.iter().all(report::ScenarioReport::clean) {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
