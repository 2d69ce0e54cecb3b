//! `segkv-server [CONFIG_FILE] [--name value ...]`: starts the server (see README.md).
#![forbid(unsafe_code)]

use std::sync::Arc;

use segkv_engine::{Config as EngineConfig, Engine, RecoveryInfo, ReplayHook};
use segkv_server::config::Config;
use segkv_server::net;
use segkv_server::server::{Loading, Shared};

fn usage() -> ! {
    eprintln!(
        "Usage: segkv-server [/path/to/segkv.conf] [options]\n       segkv-server -v or --version\n       segkv-server -h or --help\n\n\
         Options are config names as in redis.conf, e.g.:\n       segkv-server --port 7777 --dir ./data --appendfsync always\n       segkv-server /etc/segkv.conf --loglevel verbose"
    );
    std::process::exit(1);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("-v" | "--version") => {
            println!(
                "segkv-server v={} (Redis {} compatible)",
                env!("CARGO_PKG_VERSION"),
                segkv_server::REDIS_VERSION
            );
            return;
        }
        Some("-h" | "--help") => usage(),
        _ => {}
    }
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    // Options accepted for compatibility that do not act yet: say so rather than surprise.
    if cfg.get("daemonize") == "yes" {
        eprintln!("segkv: warning: daemonize is not supported; running in the foreground");
    }
    if !cfg.get("logfile").is_empty() {
        eprintln!("segkv: warning: logfile is not supported yet; logging to stderr");
    }
    let pidfile = cfg.get("pidfile").to_string();
    if !pidfile.is_empty()
        && let Err(e) = std::fs::write(&pidfile, format!("{}\n", std::process::id()))
    {
        eprintln!("segkv: warning: cannot write pidfile {pidfile}: {e}");
    }
    // Listen first and load in the background, as Redis does: until the log is replayed,
    // clients get -LOADING (INFO, CONFIG, ... still answer) and INFO shows the progress.
    let loading = Arc::new(Loading::scan(cfg.dir()));
    let mut ecfg = EngineConfig::new(cfg.dir());
    ecfg.databases = cfg.databases();
    ecfg.appendfsync = cfg.appendfsync();
    ecfg.segment_size = segkv_server::memory::segment_size_for(
        cfg.segment_size(),
        cfg.get("maxmemory").parse().unwrap_or(0),
    );
    ecfg.recover_corrupt = cfg.get("recover-corrupt") == "yes";
    let replicaof = cfg
        .get("replicaof")
        .split_once(' ')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)));
    // A replica continues the segment it was copying when it stopped.
    ecfg.reopen_tail = replicaof.is_some();
    {
        let l = loading.clone();
        ecfg.on_replay = Some(ReplayHook(Arc::new(move |addr| l.replayed(addr))));
    }
    let listeners = match net::bind_all(&cfg.bind(), cfg.port()) {
        Ok(l) if !l.is_empty() => l,
        Ok(_) => {
            eprintln!("segkv: no address to listen on (check 'bind')");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("segkv: {e}");
            std::process::exit(1);
        }
    };
    let threads = cfg.threads();
    let port = cfg.port();
    let dir = cfg.dir().display().to_string();
    let policy = cfg.appendfsync();
    let serve_after: u64 = cfg
        .get("loading-process-events-interval-bytes")
        .parse()
        .unwrap_or(2 << 20);
    let srv = Shared::loading(cfg, Some(loading.clone())).arc();
    ecfg.history_delta = srv.repl.delta();
    if let Some((h, p)) = replicaof
        && let Some(host) = srv.host()
    {
        eprintln!("segkv: replica of {h}:{p} (replicaof)");
        srv.repl.replicaof(host, h, p);
    }
    {
        let s = srv.clone();
        std::thread::Builder::new()
            .name("segkv-stats".into())
            .spawn(move || s.stats.sample_forever())
            .expect("spawn stats thread");
    }
    let workers = match net::start_workers(&srv, threads) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("segkv: cannot start worker threads: {e}");
            std::process::exit(1);
        }
    };
    {
        let s = srv.clone();
        let mut signals = match signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("segkv: cannot install signal handlers: {e}");
                std::process::exit(1);
            }
        };
        std::thread::Builder::new()
            .name("segkv-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    eprintln!("segkv: received signal {sig}, scheduling shutdown");
                    net::shutdown_now(&s);
                }
            })
            .expect("spawn signal thread");
    }
    eprintln!(
        "segkv: loading the log in {dir} ({} bytes of segment files) while listening on port {port}",
        loading.total_bytes()
    );
    {
        let s = srv.clone();
        std::thread::Builder::new()
            .name("segkv-loader".into())
            .spawn(move || {
                // A panic here must end the process, as it did before loading moved off the
                // main thread, not leave a server answering -LOADING forever.
                let opened =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Engine::open(ecfg)));
                let engine = match opened {
                    Ok(Ok(e)) => e,
                    Ok(Err(e)) => {
                        eprintln!("segkv: cannot open the data directory {dir}: {e}");
                        std::process::exit(1);
                    }
                    Err(_) => {
                        eprintln!("segkv: loading the data directory {dir} panicked (see above)");
                        std::process::exit(1);
                    }
                };
                log_recovery(engine.recovery());
                let w = s.clone();
                engine.on_durable(Box::new(move |_addr| w.wake_all()));
                s.repl.attach(&engine);
                if !s.repl.is_replica() {
                    s.repl.start_as_primary(&engine);
                }
                s.set_engine(engine);
                let c = s.clone();
                std::thread::Builder::new()
                    .name("segkv-cleaner".into())
                    .spawn(move || segkv_server::memory::run_cleaner(c))
                    .expect("spawn cleaner thread");
                eprintln!(
                    "segkv: ready to accept connections on port {port} ({threads} worker threads, dir {dir}, appendfsync {})",
                    policy.name()
                );
            })
            .expect("spawn loader thread");
    }
    // As Redis: clients are served while loading only once the first
    // loading-process-events-interval-bytes are in (until then they wait in the listen
    // backlog), so a small log is in memory before anyone is told -LOADING.
    while srv.engine.loaded().is_none() && loading.loaded_bytes() < serve_after {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    net::accept_loop(srv, listeners, workers);
    std::process::exit(1);
}

/// What recovery did, in Redis's words where Redis has them ("Done loading RDB, keys loaded:
/// ..., keys expired: ...", "DB loaded from disk: ... seconds").
fn log_recovery(r: &RecoveryInfo) {
    let rep = &r.report;
    if let Some((path, offset)) = &rep.truncated {
        eprintln!(
            "segkv: cut a torn tail at {} offset {offset}: the end of a write that never completed (nothing acknowledged under appendfsync always is lost)",
            path.display()
        );
    }
    for (path, offset, why) in &rep.skipped {
        eprintln!(
            "segkv: warning: skipped a corrupt record in {} at offset {offset} ({why}), as recover-corrupt asks",
            path.display()
        );
    }
    match (r.checkpoint, &r.checkpoint_unused) {
        (Some(addr), _) => eprintln!(
            "segkv: loaded the index checkpoint (it covers the log up to {addr:#x}); replayed the log after it"
        ),
        (None, Some(why)) => {
            eprintln!("segkv: the index checkpoint was not used ({why}); replayed the whole log")
        }
        (None, None) => {
            eprintln!("segkv: no index checkpoint in the data directory; replayed the whole log")
        }
    }
    eprintln!(
        "segkv: Done loading the log, keys loaded: {}, keys expired: {}.",
        r.keys_loaded, r.expired_skipped
    );
    eprintln!(
        "segkv: DB loaded from disk: {:.3} seconds ({} segments, {} records, {} bytes)",
        r.seconds, rep.segments, rep.records, rep.bytes
    );
}
