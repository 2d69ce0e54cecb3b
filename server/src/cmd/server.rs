//! Server: COMMAND (COUNT INFO DOCS LIST GETKEYS) INFO CONFIG (GET SET RESETSTAT REWRITE) TIME
//! LASTSAVE SAVE BGSAVE SHUTDOWN FUNCTION FLUSH DEBUG (SLEEP DIGEST DIGEST-VALUE HELP).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use segkv_engine::Engine;

use super::{Command, Ctx, LOADING_ERR, SYNTAX, engine_err, eq};
use crate::glob;
use crate::reply::Reply;
use crate::server::unix_ms;

fn info_entry(ctx: &Ctx<'_>, c: &Command) -> Reply {
    let m = c.meta;
    let mut ids: Vec<usize> = c.subs.values().copied().collect();
    ids.sort_unstable();
    let subs: Vec<Reply> = ids
        .into_iter()
        .map(|i| info_entry(ctx, &ctx.srv.table.all[i]))
        .collect();
    Reply::Array(vec![
        Reply::bulk(m.name),
        Reply::Int(m.arity),
        Reply::Set(m.flags.iter().map(|f| Reply::status(f)).collect()),
        Reply::Int(m.first_key),
        Reply::Int(m.last_key),
        Reply::Int(m.step),
        Reply::Set(m.acl.iter().map(|f| Reply::status(f)).collect()),
        Reply::Meta(&m.tips),
        Reply::Meta(&m.key_specs),
        // Redis prints an empty set, or an array of subcommands.
        if subs.is_empty() {
            Reply::Set(subs)
        } else {
            Reply::Array(subs)
        },
    ])
}

fn tops<'a>(ctx: &'a Ctx<'_>) -> impl Iterator<Item = &'a Command> + 'a {
    ctx.srv.table.top.iter().map(|&i| &ctx.srv.table.all[i])
}

pub fn command(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    Reply::Array(tops(ctx).map(|c| info_entry(ctx, c)).collect())
}

pub fn command_count(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    Reply::Int(ctx.srv.table.top.len() as i64)
}

/// A command or `parent|sub` by name.
fn find<'a>(ctx: &'a Ctx<'_>, name: &[u8]) -> Option<&'a Command> {
    let lower = name.to_ascii_lowercase();
    ctx.srv
        .table
        .all
        .iter()
        .find(|c| c.meta.name.as_bytes() == lower.as_slice())
}

pub fn command_info(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if a.len() == 2 {
        return command(ctx, a);
    }
    Reply::Array(
        a[2..]
            .iter()
            .map(|n| {
                find(ctx, n)
                    .map(|c| info_entry(ctx, c))
                    .unwrap_or(Reply::Nil)
            })
            .collect(),
    )
}

pub fn command_docs(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let pairs: Vec<(Reply, Reply)> = if a.len() == 2 {
        tops(ctx)
            .map(|c| (Reply::bulk(c.meta.name), Reply::Meta(&c.meta.docs)))
            .collect()
    } else {
        a[2..]
            .iter()
            .filter_map(|n| find(ctx, n))
            .filter(|c| !matches!(c.meta.docs, super::meta_types::M::Null))
            .map(|c| (Reply::bulk(c.meta.name), Reply::Meta(&c.meta.docs)))
            .collect()
    };
    Reply::Map(pairs)
}

pub fn command_list(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let mut filter: Option<(u8, &[u8])> = None;
    if a.len() == 5 && eq(a[2], "filterby") {
        let what = if eq(a[3], "module") {
            b'm'
        } else if eq(a[3], "aclcat") {
            b'a'
        } else if eq(a[3], "pattern") {
            b'p'
        } else {
            return Reply::err(SYNTAX);
        };
        filter = Some((what, a[4]));
    } else if a.len() != 2 {
        return Reply::err(SYNTAX);
    }
    let mut out = Vec::new();
    for c in ctx.srv.table.all.iter() {
        let ok = match filter {
            None => true,
            Some((b'm', _)) => false,
            Some((b'a', cat)) => c
                .meta
                .acl
                .iter()
                .any(|x| x.as_bytes()[1..].eq_ignore_ascii_case(cat)),
            Some((_, pat)) => glob::matches(pat, c.meta.name.as_bytes(), true),
        };
        if ok {
            out.push(Reply::bulk(c.meta.name));
        }
    }
    Reply::Array(out)
}

pub fn command_getkeys(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let args = &a[2..];
    let Some(c) = ctx.srv.table.resolve(args) else {
        return Reply::err("ERR Invalid command specified");
    };
    let m = c.meta;
    let argc = args.len() as i64;
    if (m.arity > 0 && argc != m.arity) || argc < -m.arity {
        return Reply::err("ERR Invalid number of arguments specified for command");
    }
    if m.first_key == 0 {
        return Reply::err("ERR The command has no key arguments");
    }
    let last = if m.last_key < 0 {
        argc + m.last_key
    } else {
        m.last_key
    };
    let mut keys = Vec::new();
    let mut i = m.first_key;
    while i <= last && i < argc {
        keys.push(Reply::bulk(args[i as usize]));
        i += m.step.max(1);
    }
    Reply::Array(keys)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2}G", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// Resident set size in bytes, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// The INFO text for the given section names (Redis's "default" set when empty).
pub fn info_text(ctx: &Ctx<'_>, sections: &[String]) -> String {
    let all = sections.iter().any(|s| s == "all" || s == "everything");
    let default = sections.is_empty() || sections.iter().any(|s| s == "default");
    let want = |name: &str, in_default: bool| {
        all || (default && in_default) || sections.iter().any(|s| s == name)
    };
    let srv = ctx.srv;
    // While loading (no engine yet) the engine's figures read as zero.
    let stats = srv.engine.loaded().map(|e| e.stats()).unwrap_or_default();
    let cfg = srv.config.read().unwrap();
    let mut out = String::new();
    let section = |out: &mut String, title: &str| {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = write!(out, "# {title}\r\n");
    };
    macro_rules! line {
        ($($arg:tt)*) => {{ let _ = write!(out, $($arg)*); out.push_str("\r\n"); }};
    }
    let uptime = srv.started.elapsed().as_secs();
    if want("server", true) {
        section(&mut out, "Server");
        line!("redis_version:{}", crate::REDIS_VERSION);
        line!("redis_git_sha1:00000000");
        line!("redis_git_dirty:0");
        line!("redis_build_id:0");
        line!("redis_mode:standalone");
        line!("os:{} {}", std::env::consts::OS, std::env::consts::ARCH);
        line!("arch_bits:64");
        line!("monotonic_clock:POSIX clock_gettime");
        line!("multiplexing_api:epoll");
        line!("atomicvar_api:c11-builtin");
        line!("gcc_version:0.0.0");
        line!("process_id:{}", std::process::id());
        line!("process_supervised:no");
        line!("run_id:{}", srv.run_id);
        line!("tcp_port:{}", srv.tcp_port);
        line!("server_time_usec:{}", unix_ms() * 1000);
        line!("uptime_in_seconds:{uptime}");
        line!("uptime_in_days:{}", uptime / 86400);
        line!("hz:{}", cfg.get("hz"));
        line!("configured_hz:{}", cfg.get("hz"));
        line!("lru_clock:{}", (unix_ms() / 1000) & ((1 << 24) - 1));
        line!("executable:{}", srv.executable);
        line!("config_file:{}", srv.config_file);
        line!("io_threads_active:0");
        line!("segkv_version:{}", env!("CARGO_PKG_VERSION"));
        line!("segkv_threads:{}", cfg.threads());
    }
    if want("clients", true) {
        section(&mut out, "Clients");
        line!("connected_clients:{}", srv.connected.load(Relaxed));
        line!("cluster_connections:0");
        line!("maxclients:{}", cfg.maxclients());
        line!("client_recent_max_input_buffer:0");
        line!("client_recent_max_output_buffer:0");
        line!("blocked_clients:0");
        line!("tracking_clients:0");
        line!("clients_in_timeout_table:0");
    }
    if want("memory", true) {
        section(&mut out, "Memory");
        let rss = rss_bytes();
        let maxmem: u64 = cfg.get("maxmemory").parse().unwrap_or(0);
        // The data set: the index and every record in the log (live, or dead and not yet
        // reclaimed by the cleaner). That is what maxmemory limits.
        let (used, live) = srv.engine.loaded().map_or((0, 0), |e| e.used_memory());
        let peak = srv.note_used_memory(used);
        line!("used_memory:{used}");
        line!("used_memory_human:{}", human(used));
        line!("used_memory_rss:{rss}");
        line!("used_memory_rss_human:{}", human(rss));
        line!("used_memory_peak:{peak}");
        line!("used_memory_peak_human:{}", human(peak));
        line!("used_memory_overhead:{}", stats.index_bytes);
        line!(
            "used_memory_dataset:{}",
            used.saturating_sub(stats.index_bytes)
        );
        line!("total_system_memory:{}", total_memory());
        line!("total_system_memory_human:{}", human(total_memory()));
        line!("maxmemory:{maxmem}");
        line!("maxmemory_human:{}", human(maxmem));
        line!("maxmemory_policy:{}", cfg.get("maxmemory-policy"));
        line!(
            "mem_fragmentation_ratio:{:.2}",
            if used > 0 {
                rss as f64 / used as f64
            } else {
                1.0
            }
        );
        line!("segkv_live_bytes:{live}");
        line!("mem_allocator:libc");
        line!("lazyfree_pending_objects:0");
        line!("lazyfreed_objects:0");
        line!("segkv_index_bytes:{}", stats.index_bytes);
        line!("segkv_segments:{}", stats.segments);
    }
    if want("persistence", true) {
        section(&mut out, "Persistence");
        let still_loading = srv.engine.loaded().is_none();
        line!("loading:{}", u8::from(still_loading));
        line!("async_loading:0");
        line!(
            "rdb_changes_since_last_save:{}",
            stats.tail_addr.saturating_sub(stats.durable_addr)
        );
        line!("rdb_bgsave_in_progress:0");
        line!("rdb_last_save_time:{}", srv.lastsave.load(Relaxed));
        line!("rdb_last_bgsave_status:ok");
        let recovery = srv.engine.loaded().map(|e| e.recovery());
        line!(
            "rdb_last_load_keys_expired:{}",
            recovery.map_or(0, |r| r.expired_skipped)
        );
        line!(
            "rdb_last_load_keys_loaded:{}",
            recovery.map_or(0, |r| r.keys_loaded)
        );
        line!("aof_enabled:1");
        line!("aof_rewrite_in_progress:0");
        line!("aof_rewrite_scheduled:0");
        line!(
            "aof_last_write_status:{}",
            if stats.last_fsync_ok || stats.fsyncs == 0 {
                "ok"
            } else {
                "err"
            }
        );
        line!("aof_current_size:{}", stats.tail_addr);
        if let Some(l) = srv.loading.as_ref().filter(|_| still_loading) {
            // As Redis computes them: progress in bytes of the files, ETA from the rate so far.
            let (total, loaded) = (l.total_bytes(), l.loaded_bytes());
            let perc = if total > 0 {
                loaded as f64 / total as f64 * 100.0
            } else {
                0.0
            };
            let elapsed = (unix_ms() / 1000).saturating_sub(l.start_time);
            let eta = if elapsed == 0 {
                1
            } else {
                elapsed * total.saturating_sub(loaded) / (loaded + 1)
            };
            line!("loading_start_time:{}", l.start_time);
            line!("loading_total_bytes:{total}");
            line!("loading_rdb_used_mem:0");
            line!("loading_loaded_bytes:{loaded}");
            line!("loading_loaded_perc:{perc:.2}");
            line!("loading_eta_seconds:{eta}");
        }
        line!("segkv_appendfsync:{}", srv.appendfsync.name());
        line!("segkv_tail_addr:{}", stats.tail_addr);
        line!("segkv_durable_addr:{}", stats.durable_addr);
        line!("segkv_log_bytes_written:{}", stats.log_bytes_written);
        line!("segkv_fsyncs:{}", stats.fsyncs);
        line!("segkv_writer:{}", stats.writer);
        // The address the index checkpoint loaded at startup covered (0: the whole log was
        // replayed).
        line!(
            "segkv_checkpoint_loaded_covered:{}",
            recovery.and_then(|r| r.checkpoint).unwrap_or(0)
        );
    }
    if want("stats", true) {
        section(&mut out, "Stats");
        let s = &srv.stats;
        line!(
            "total_connections_received:{}",
            s.connections_received.load(Relaxed)
        );
        line!(
            "total_commands_processed:{}",
            s.commands_processed.load(Relaxed)
        );
        line!(
            "instantaneous_ops_per_sec:{}",
            s.instantaneous_ops.load(Relaxed)
        );
        line!(
            "instantaneous_input_kbps:{:.2}",
            s.instantaneous_input.load(Relaxed) as f64 / 1024.0
        );
        line!(
            "instantaneous_output_kbps:{:.2}",
            s.instantaneous_output.load(Relaxed) as f64 / 1024.0
        );
        line!("total_net_input_bytes:{}", s.net_input_bytes.load(Relaxed));
        line!(
            "total_net_output_bytes:{}",
            s.net_output_bytes.load(Relaxed)
        );
        line!(
            "rejected_connections:{}",
            s.rejected_connections.load(Relaxed)
        );
        // Counted on the primary side, as Redis does.
        line!("sync_full:{}", srv.repl.full_syncs.load(Relaxed));
        line!(
            "sync_partial_ok:{}",
            srv.repl.partial_syncs_ok.load(Relaxed)
        );
        line!(
            "sync_partial_err:{}",
            srv.repl.partial_syncs_err.load(Relaxed)
        );
        line!("expired_keys:{}", stats.expired_keys);
        line!(
            "evicted_keys:{}",
            srv.engine.loaded().map_or(0, |e| e.evicted_keys())
        );
        line!("evicted_clients:0");
        line!("keyspace_hits:{}", s.keyspace_hits.load(Relaxed));
        line!("keyspace_misses:{}", s.keyspace_misses.load(Relaxed));
        line!("pubsub_channels:0");
        line!("pubsub_patterns:0");
        line!("total_error_replies:{}", s.error_replies.load(Relaxed));
        line!(
            "client_query_buffer_limit_disconnections:{}",
            s.client_qbuf_limit_disconnections.load(Relaxed)
        );
        line!(
            "client_output_buffer_limit_disconnections:{}",
            s.client_outbuf_limit_disconnections.load(Relaxed)
        );
    }
    if want("stats", true) {
        // The cleaner's work, in the Stats section (clients know Redis's sections only).
        let c = srv
            .engine
            .loaded()
            .map(|e| e.cleaner_stats())
            .unwrap_or_default();
        let (data, dead) = srv.engine.loaded().map_or((0, 0), |e| e.log().space());
        let written = c.log_bytes.saturating_sub(c.bytes_copied);
        line!("segkv_cleaner_segments_cleaned:{}", c.segments_cleaned);
        line!(
            "segkv_cleaner_segments_dropped_expired:{}",
            c.segments_dropped
        );
        line!("segkv_cleaner_records_copied:{}", c.records_copied);
        line!("segkv_cleaner_bytes_copied:{}", c.bytes_copied);
        line!("segkv_cleaner_bytes_reclaimed:{}", c.bytes_reclaimed);
        line!("segkv_cleaner_keys_expired_by_sweep:{}", c.keys_swept);
        // Bytes the cleaner copied per byte clients wrote.
        line!(
            "segkv_cleaner_write_amplification:{:.3}",
            if written > 0 {
                c.bytes_copied as f64 / written as f64
            } else {
                0.0
            }
        );
        line!("segkv_log_data_bytes:{data}");
        line!("segkv_log_dead_bytes:{dead}");
    }
    if want("replication", true) {
        section(&mut out, "Replication");
        super::replication::info_lines(srv, &mut out);
    }
    if want("cpu", true) {
        section(&mut out, "CPU");
        let (user, sys) = cpu_times();
        line!("used_cpu_sys:{sys:.6}");
        line!("used_cpu_user:{user:.6}");
    }
    if want("modules", true) {
        section(&mut out, "Modules");
    }
    if want("commandstats", false) {
        section(&mut out, "Commandstats");
        for c in &srv.table.all {
            let calls = c.stats.calls.load(Relaxed);
            let rejected = c.stats.rejected.load(Relaxed);
            let failed = c.stats.failed.load(Relaxed);
            if calls == 0 && rejected == 0 && failed == 0 {
                continue;
            }
            let usec = c.stats.usec.load(Relaxed);
            let per = if calls == 0 {
                0.0
            } else {
                usec as f64 / calls as f64
            };
            line!(
                "cmdstat_{}:calls={calls},usec={usec},usec_per_call={per:.2},rejected_calls={rejected},failed_calls={failed}",
                c.meta.name
            );
        }
    }
    if want("errorstats", true) {
        section(&mut out, "Errorstats");
        let errs = srv.stats.errors.lock().unwrap();
        let mut names: Vec<_> = errs.iter().collect();
        names.sort();
        for (code, n) in names {
            line!("errorstat_{code}:count={n}");
        }
    }
    if want("cluster", true) {
        section(&mut out, "Cluster");
        line!("cluster_enabled:0");
    }
    if want("keyspace", true) {
        section(&mut out, "Keyspace");
        let engine = srv.engine.loaded();
        for db in 0..engine.map_or(0, |e| e.databases()) {
            let keys = engine.map_or(0, |e| e.len(db));
            if keys > 0 {
                line!(
                    "db{db}:keys={keys},expires={},avg_ttl=0",
                    engine.map_or(0, |e| e.expires_len(db))
                );
            }
        }
    }
    out
}

fn cpu_times() -> (f64, f64) {
    // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second).
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (tick(11), tick(12))
}

pub fn info(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let sections: Vec<String> = a[1..]
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    Reply::Verbatim(info_text(ctx, &sections))
}

pub fn config_get(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let cfg = ctx.srv.config.read().unwrap();
    Reply::Map(
        cfg.get_matching(&a[2..])
            .into_iter()
            .map(|(n, v)| (Reply::bulk(n), Reply::bulk(v)))
            .collect(),
    )
}

pub fn config_set(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if !a.len().is_multiple_of(2) {
        return Reply::err("ERR wrong number of arguments for 'config|set' command");
    }
    let pairs: Vec<(&[u8], &[u8])> = a[2..].chunks(2).map(|c| (c[0], c[1])).collect();
    let r = ctx.srv.config.write().unwrap().set_many(&pairs);
    match r {
        Ok(_) => {
            ctx.srv.refresh_limits();
            Reply::OK
        }
        Err(e) => Reply::error(e.text()),
    }
}

pub fn config_resetstat(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    ctx.srv.stats.reset();
    if let Some(e) = ctx.srv.engine.loaded() {
        e.reset_stats();
    }
    for c in &ctx.srv.table.all {
        c.stats.calls.store(0, Relaxed);
        c.stats.usec.store(0, Relaxed);
        c.stats.rejected.store(0, Relaxed);
        c.stats.failed.store(0, Relaxed);
    }
    Reply::OK
}

pub fn config_rewrite(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    match ctx.srv.config.read().unwrap().rewrite() {
        Ok(()) => Reply::OK,
        Err(e) => Reply::error(e),
    }
}

pub fn time(_ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::Bulk(d.as_secs().to_string().into_bytes()),
        Reply::Bulk(d.subsec_micros().to_string().into_bytes()),
    ])
}

pub fn lastsave(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    Reply::Int(ctx.srv.lastsave.load(Relaxed) as i64)
}

fn sync(ctx: &Ctx<'_>) -> Result<(), Reply> {
    // While loading (only SHUTDOWN gets here then) nothing was written: nothing to sync.
    if let Some(e) = ctx.srv.engine.loaded() {
        e.sync().map_err(engine_err)?;
    }
    ctx.srv.lastsave.store(unix_ms() / 1000, Relaxed);
    Ok(())
}

/// SAVE: the log is the data, so saving is making the log durable.
pub fn save(ctx: &mut Ctx<'_>, _a: &[&[u8]]) -> Reply {
    match sync(ctx) {
        Ok(()) => Reply::OK,
        Err(r) => r,
    }
}

pub fn bgsave(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    if a.len() > 2 || (a.len() == 2 && !eq(a[1], "schedule")) {
        return Reply::err(SYNTAX);
    }
    match sync(ctx) {
        Ok(()) => Reply::status("Background saving started"),
        Err(r) => r,
    }
}

pub fn shutdown(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let mut abort = false;
    for opt in &a[1..] {
        if eq(opt, "abort") {
            abort = true;
        } else if !(eq(opt, "nosave") || eq(opt, "save") || eq(opt, "now") || eq(opt, "force")) {
            return Reply::err(SYNTAX);
        }
    }
    if abort {
        return if a.len() == 2 {
            Reply::err("ERR No shutdown in progress.")
        } else {
            Reply::err(SYNTAX)
        };
    }
    // NOSAVE too flushes the log: it is the data, not a snapshot.
    if sync(ctx).is_err() && !a[1..].iter().any(|o| eq(o, "force")) {
        return Reply::err("ERR Errors trying to SHUTDOWN. Check logs.");
    }
    ctx.shutdown = true;
    Reply::None
}

pub fn function_flush(_ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    match a.get(2) {
        None => Reply::OK,
        Some(m) if eq(m, "async") || eq(m, "sync") => Reply::OK,
        Some(_) => Reply::err("ERR FUNCTION FLUSH only supports SYNC|ASYNC option"),
    }
}

pub fn debug(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> Reply {
    let allowed = match ctx.srv.config.read().unwrap().get("enable-debug-command") {
        "yes" => true,
        "local" => ctx.s.local,
        _ => false,
    };
    if !allowed {
        return Reply::err(
            "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you can run it from a local connection, otherwise you need to set this option in the configuration file, and then restart the server.",
        );
    }
    if eq(a[1], "sleep") && a.len() == 3 {
        let secs: f64 = std::str::from_utf8(a[2])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0.0);
        if secs > 0.0 && secs.is_finite() {
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
        }
        return Reply::OK;
    }
    if eq(a[1], "help") && a.len() == 2 {
        return Reply::Array(DEBUG_HELP.iter().map(|l| Reply::status(l)).collect());
    }
    if eq(a[1], "digest") && a.len() == 2 {
        let Some(engine) = ctx.srv.engine.loaded() else {
            return Reply::err(LOADING_ERR);
        };
        return Reply::Status(hex(&keyspace_digest(engine)).into());
    }
    if eq(a[1], "digest-value") {
        let Some(engine) = ctx.srv.engine.loaded() else {
            return Reply::err(LOADING_ERR);
        };
        let db = ctx.s.db;
        return Reply::Array(
            a[2..]
                .iter()
                .map(|k| {
                    let d = engine.read(db, k, |c| value_digest(c.value));
                    Reply::Status(hex(&d.unwrap_or_default()).into())
                })
                .collect(),
        );
    }
    Reply::error(format!(
        "ERR unknown subcommand '{}'. Try DEBUG HELP.",
        String::from_utf8_lossy(&a[1][..a[1].len().min(128)])
    ))
}

static DEBUG_HELP: &[&str] = &[
    "DEBUG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "DIGEST",
    "    Output a hex signature representing the current DB content.",
    "DIGEST-VALUE <key> [<key> ...]",
    "    Output a hex signature of the values of all the specified keys.",
    "SLEEP <seconds>",
    "    Stop the server for <seconds>. Decimals allowed.",
    "HELP",
    "    Prints this help.",
];

/// A 192-bit digest (three 64-bit lanes); DEBUG shows its first 160 bits as Redis's 40 hex
/// characters. Not Redis's SHA-1 numbers, but the same use: equal datasets give equal
/// digests, so tests can compare a primary with its replicas.
type Digest = [u64; 3];

/// DEBUG DIGEST: the sum over every live key of every database of the hash of (database
/// number, key, value, absolute expiry in ms or none). A sum, so the order keys are walked in
/// (which depends on the index's size and history) does not matter; an empty dataset gives
/// zeros, as in Redis. Expired keys are not counted (reading them expires them). Walked under
/// concurrent writes it gives some digest, not a snapshot's. Holds one database's keys in
/// memory at a time: a SCAN may return a key twice while the index grows, and a key must
/// count once.
fn keyspace_digest(engine: &Engine) -> Digest {
    let mut total = Digest::default();
    for db in 0..engine.databases() {
        if engine.len(db) == 0 {
            continue;
        }
        let mut keys = HashSet::new();
        let mut cursor = 0;
        loop {
            cursor = engine.scan(db, cursor, 1024, |k| {
                keys.insert(k.to_vec());
            });
            if cursor == 0 {
                break;
            }
        }
        for key in keys {
            let d = engine.read(db, &key, |c| {
                let expire = c.expire_at.map(u64::to_le_bytes);
                hash_parts(&[
                    b"key",
                    &(db as u64).to_le_bytes(),
                    &key,
                    c.value,
                    // Length-prefixed: none (0 bytes) differs from any expiry (8 bytes).
                    expire.as_ref().map_or(&[][..], |e| &e[..]),
                ])
            });
            if let Some(d) = d {
                for (t, x) in total.iter_mut().zip(d) {
                    *t = t.wrapping_add(x);
                }
            }
        }
    }
    total
}

/// DEBUG DIGEST-VALUE: as in Redis, the value alone (not the key, not the expiry).
fn value_digest(value: &[u8]) -> Digest {
    hash_parts(&[b"value", value])
}

/// 40 hex characters: the first 160 bits of `d`.
fn hex(d: &Digest) -> String {
    format!("{:016x}{:016x}{:08x}", d[0], d[1], d[2] >> 32)
}

/// Folded multiply (as in wyhash and aHash): the full 128-bit product, halves XORed.
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

/// A stable (not per-process, not per-toolchain) non-cryptographic 192-bit hash of `parts`,
/// each prefixed with its length so that field boundaries count: three lanes of folded
/// multiplies with distinct seeds over 8-byte words, each finished with splitmix64's mixer.
fn hash_parts(parts: &[&[u8]]) -> Digest {
    const SEEDS: Digest = [
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
    ];
    const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Digest::default();
    for (lane, seed) in out.iter_mut().zip(SEEDS) {
        let mut h = seed;
        let mut feed = |w: u64| h = fold_mul(h ^ w ^ seed, MUL);
        for p in parts {
            feed(p.len() as u64);
            let mut words = p.chunks_exact(8);
            for w in &mut words {
                feed(u64::from_le_bytes(w.try_into().expect("8 bytes")));
            }
            let rest = words.remainder();
            if !rest.is_empty() {
                let mut w = [0u8; 8];
                w[..rest.len()].copy_from_slice(rest);
                feed(u64::from_le_bytes(w));
            }
        }
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        *lane = z ^ (z >> 31);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hash_is_stable_and_separates_fields() {
        assert_eq!(hex(&Digest::default()), "0".repeat(40));
        let a = hash_parts(&[b"key", b"ab", b"c"]);
        assert_eq!(a, hash_parts(&[b"key", b"ab", b"c"]));
        assert_ne!(a, hash_parts(&[b"key", b"a", b"bc"]));
        assert_ne!(a, hash_parts(&[b"key", b"ab", b"d"]));
        assert_ne!(hash_parts(&[b""]), hash_parts(&[b"\0"]));
        assert_eq!(hex(&a).len(), 40);
    }
}
