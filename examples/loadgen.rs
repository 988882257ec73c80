//! Load benchmark: the gateway side by side with a plain reverse proxy and the upstream itself.
//!
//! ```text
//! cargo build --release --example gateway --example loadgen
//! target/release/examples/loadgen                       # 64 connections, 10 s per scenario
//! target/release/examples/loadgen --conns 32 --duration 5 --warmup 1 --pin
//! target/release/examples/loadgen --scenarios json,sse --duration 5 --rounds 5   # medians
//! target/release/examples/loadgen --targets proxy,proxy-per-core,layers,gateway --scenarios json
//! ```
//!
//! One run starts, each in its own process (this binary re-run with a role, or the gateway
//! example):
//!
//! * a fast loopback **upstream** (OpenAI-compatible: a fixed JSON answer, or a short SSE stream
//!   for `"stream": true`; the model `tiny-context` is answered with `--fail-status`),
//! * a **plain proxy**: hyper server on a multi-thread tokio runtime, one pooled hyper-util
//!   client, bytes forwarded unchanged, no parsing, no routing (the limit a gateway can reach;
//!   the design of `../shared/bench/bare-proxy`),
//! * the **plain proxy, per core**: the same served the gateway's way: one current-thread
//!   runtime per CPU (`available_parallelism`, so 1 under `--pin`), each with its own accept
//!   loop on a clone of one listener and its own client,
//! * the **layers alone (per core)**: the per-core proxy with the routing between server and
//!   client and nothing else (a role of this binary: `FallbackLayer` with `auto_route`, as the
//!   gateway runs it), so that its difference to the per-core proxy is what the crate costs,
//! * the **gateway**: `target/release/examples/gateway --config <generated toml> --listen ADDR`
//!   (`--gateway PATH`); its difference to the layers alone is what the example adds (routes,
//!   metrics, timeouts, per-model upstreams).
//!
//! and drives each of them the same way: `--conns` HTTP/1.1 connections, one request in flight
//! per connection, pre-built requests, `TCP_NODELAY` everywhere. For every target and scenario
//! it prints requests per second, p50 / p99 / p99.9 latency (to the last byte of the answer), the
//! server's CPU time per request, and non-2xx answers. Scenarios: `json` and `sse` (the primary
//! answers), `json-fallback` and `sse-fallback` (the primary fails, the gateway moves on to the
//! next model of `models`; only the gateway can do that, so only the gateway runs them), and
//! `big` (1 MiB request bodies: the peak RSS of the server, VmHWM, against conns x 1 MiB, each
//! target in a fresh process). The layers and the gateway are compared with both plain proxies
//! that ran: "vs plain proxy" (the reference design) and "vs plain proxy per core" (the same way
//! of serving).
//!
//! The failure is a 400 `context_length_exceeded` by default: a class that moves the chain on
//! but does not cool the model down, so every request really tries the primary first (a 503 would
//! soon put the failing model last in the chain; try `--fail-status 503` to see it).
//!
//! With `--rounds N`, every target and scenario is driven N times, interleaved (round 1: proxy
//! json, gateway json, proxy sse, ...; then round 2), and the comparisons are medians of the
//! rounds' ratios with their range: on a shared 2-core VM one run's ratio can be off by 20
//! points either way.
//!
//! On a small machine the load generator competes with the servers for CPU. It is kept lean (one
//! connection per task, requests built from shared buffers, latencies in a preallocated vector),
//! and `--pin` puts the server under test on CPU 1 and everything else on CPU 0 (with `taskset`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Builder;

const USAGE: &str = "usage: loadgen [options]

  --conns N            concurrent connections (default 64)
  --duration SECS      measured seconds per scenario (default 10)
  --warmup SECS        unmeasured seconds before each scenario (default 2)
  --targets LIST       of direct,proxy,proxy-per-core,layers,gateway (default all)
  --scenarios LIST     of json,sse,json-fallback,sse-fallback,big (default all)
  --gateway PATH       the gateway example binary (default $CARGO_TARGET_DIR or target,
                       /release/examples/gateway)
  --gateway-log FILTER RUST_LOG for the gateway (default warn: no line per request)
  --fail-status CODE   what the upstream answers for the failing model: 400 or 503 (default 400)
  --big-bytes N        request body size of the `big` scenario (default 1048576)
  --pin                server under test on CPU 1, upstream and load on CPU 0 (taskset)
  --rounds N           drive every target and scenario N times, interleaved, and report
                       medians (default 1; on a noisy machine use 5 or more)

roles (started by the benchmark itself):
  loadgen upstream FAIL_MODEL STATUS
  loadgen proxy UPSTREAM [per-core]      loadgen layers UPSTREAM [per-core]
  (per-core: one current-thread runtime per CPU, each accepting on the shared listener with
  its own client; else one multi-thread runtime. A role prints `listening on ADDR` and
  listens on LOADGEN_LISTEN when set, else on a free loopback port)";

/// The model the upstream fails.
const FAILING: &str = "tiny-context";
const PRIMARY: &str = "gpt-4o-mini";
const BACKUP: &str = "gpt-4o";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("upstream") => serve_role(false, move |l| upstream_role(args.clone(), l)),
        Some("proxy") => upstream_arg(&args).and_then(|(upstream, per_core)| {
            serve_role(per_core, move |l| proxy_role(upstream.clone(), l))
        }),
        Some("layers") => upstream_arg(&args).and_then(|(upstream, per_core)| {
            serve_role(per_core, move |l| layers_role(upstream.clone(), l))
        }),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Options::parse(&args).and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Direct,
    Proxy,
    ProxyPerCore,
    Layers,
    Gateway,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct (upstream)",
            Target::Proxy => "plain proxy",
            Target::ProxyPerCore => "plain proxy, per core",
            Target::Layers => "layers alone (per core)",
            Target::Gateway => "gateway",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Json,
    Sse,
    JsonFallback,
    SseFallback,
    Big,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Json => "json",
            Scenario::Sse => "sse",
            Scenario::JsonFallback => "json, one fallback",
            Scenario::SseFallback => "sse, one fallback",
            Scenario::Big => "json, 1 MiB body",
        }
    }

    fn fallback(self) -> bool {
        matches!(self, Scenario::JsonFallback | Scenario::SseFallback)
    }

    fn stream(self) -> bool {
        matches!(self, Scenario::Sse | Scenario::SseFallback)
    }
}

impl Target {
    /// Whether the target routes (and so can fall back).
    fn routes(self) -> bool {
        matches!(self, Target::Layers | Target::Gateway)
    }
}

struct Options {
    conns: usize,
    duration: Duration,
    warmup: Duration,
    targets: Vec<Target>,
    scenarios: Vec<Scenario>,
    gateway: String,
    gateway_log: String,
    fail_status: u16,
    big_bytes: usize,
    pin: bool,
    rounds: usize,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let target_dir = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        let mut options = Options {
            conns: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            targets: vec![
                Target::Direct,
                Target::Proxy,
                Target::ProxyPerCore,
                Target::Layers,
                Target::Gateway,
            ],
            scenarios: vec![
                Scenario::Json,
                Scenario::Sse,
                Scenario::JsonFallback,
                Scenario::SseFallback,
                Scenario::Big,
            ],
            gateway: format!("{target_dir}/release/examples/gateway"),
            gateway_log: "warn".into(),
            fail_status: 400,
            big_bytes: 1 << 20,
            pin: false,
            rounds: 1,
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            if flag == "--pin" {
                options.pin = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .ok_or_else(|| format!("{flag}: not a number: {value}"))
            };
            match flag.as_str() {
                "--conns" => options.conns = number()?.max(1.0) as usize,
                "--duration" => options.duration = Duration::from_secs_f64(number()?),
                "--warmup" => options.warmup = Duration::from_secs_f64(number()?),
                "--big-bytes" => options.big_bytes = number()? as usize,
                "--rounds" => options.rounds = number()?.max(1.0) as usize,
                "--fail-status" => options.fail_status = number()? as u16,
                "--gateway-log" => options.gateway_log = value.clone(),
                "--gateway" => options.gateway = value.clone(),
                "--targets" => {
                    options.targets = list(value, |name| match name {
                        "direct" => Some(Target::Direct),
                        "proxy" => Some(Target::Proxy),
                        "proxy-per-core" => Some(Target::ProxyPerCore),
                        "layers" => Some(Target::Layers),
                        "gateway" => Some(Target::Gateway),
                        _ => None,
                    })?
                }
                "--scenarios" => {
                    options.scenarios = list(value, |name| match name {
                        "json" => Some(Scenario::Json),
                        "sse" => Some(Scenario::Sse),
                        "json-fallback" => Some(Scenario::JsonFallback),
                        "sse-fallback" => Some(Scenario::SseFallback),
                        "big" => Some(Scenario::Big),
                        _ => None,
                    })?
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(options)
    }
}

fn list<T>(value: &str, each: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    value
        .split(',')
        .map(|name| each(name.trim()).ok_or_else(|| format!("unknown name {name:?}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The benchmark

fn run(options: Options) -> Result<(), String> {
    // Before pinning, which would make this process see one CPU.
    print_machine(&options);
    if options.pin {
        // This process (the load) on CPU 0; its runtime's threads are created afterwards.
        taskset_pid(std::process::id(), "0")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let upstream = Server::start(
        role_command(&["upstream", FAILING, &options.fail_status.to_string()]),
        options.pin.then_some("0"),
        None,
    )?;
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    // Every target's server is started once, then each round drives every (target, scenario)
    // pair in turn: drifts of a noisy machine (another process, the CPU's clock) then fall on
    // all targets alike instead of on whichever ran last.
    let mut servers = Vec::new();
    for &target in &options.targets {
        if light_scenarios(&options, target).next().is_some() {
            servers.push((target, start_target(target, &options, upstream.addr)?));
        }
    }
    for round in 1..=options.rounds {
        for &scenario in &options.scenarios {
            for (target, server) in &servers {
                if !light_scenarios(&options, *target).any(|s| s == scenario) {
                    continue;
                }
                let addr = server.as_ref().map_or(upstream.addr, |s| s.addr);
                let pid = server.as_ref().map_or(upstream.pid(), Server::pid);
                let result = rt.block_on(drive(addr, pid, scenario, &options, None))?;
                eprintln!(
                    "round {round:<3} {:<23} {:<20} {}",
                    target.name(),
                    scenario.name(),
                    result.line()
                );
                rows.push(Row {
                    round,
                    target: *target,
                    scenario,
                    measured: result,
                });
            }
        }
    }
    drop(servers);
    for &target in &options.targets {
        if options.scenarios.contains(&Scenario::Big) && target != Target::Direct {
            // A fresh process, so that its peak RSS is this scenario's.
            let server = start_target(target, &options, upstream.addr)?;
            let Some(server) = server else { continue };
            let idle = proc_status_kib(server.pid(), "VmRSS:").unwrap_or(0);
            let big = Some(options.big_bytes);
            let result = rt.block_on(drive(
                server.addr,
                server.pid(),
                Scenario::Big,
                &options,
                big,
            ))?;
            let peak = proc_status_kib(server.pid(), "VmHWM:").unwrap_or(0);
            eprintln!(
                "{:<23} {:<20} {}",
                target.name(),
                Scenario::Big.name(),
                result.line()
            );
            rows.push(Row {
                round: 1,
                target,
                scenario: Scenario::Big,
                measured: result,
            });
            memory.push((target, idle, peak));
        }
    }
    print_tables(&options, &rows, &memory);
    Ok(())
}

/// The scenarios of `target` that share one server process (all but `big`; fallbacks only
/// for the gateway).
fn light_scenarios(options: &Options, target: Target) -> impl Iterator<Item = Scenario> + '_ {
    options
        .scenarios
        .iter()
        .copied()
        .filter(move |s| *s != Scenario::Big && (target.routes() || !s.fallback()))
}

fn start_target(
    target: Target,
    options: &Options,
    upstream: SocketAddr,
) -> Result<Option<Server>, String> {
    let cpu = options.pin.then_some("1");
    let upstream = upstream.to_string();
    match target {
        Target::Direct => Ok(None),
        Target::Proxy => Server::start(role_command(&["proxy", &upstream]), cpu, None).map(Some),
        Target::ProxyPerCore => {
            let command = role_command(&["proxy", &upstream, "per-core"]);
            Server::start(command, cpu, None).map(Some)
        }
        Target::Layers => {
            let command = role_command(&["layers", &upstream, "per-core"]);
            Server::start(command, cpu, None).map(Some)
        }
        Target::Gateway => {
            let listen = free_port()?;
            let config = std::env::temp_dir().join(format!("loadgen-{}.toml", listen.port()));
            std::fs::write(&config, gateway_toml(&upstream)).map_err(|e| e.to_string())?;
            let mut command = Command::new(&options.gateway);
            command
                .arg("--config")
                .arg(&config)
                .arg("--listen")
                .arg(listen.to_string())
                .env("RUST_LOG", &options.gateway_log);
            Server::start(command, cpu, Some(listen))
                .map_err(|e| format!("{e} (build it: cargo build --release --example gateway)"))
                .map(Some)
        }
    }
}

/// The gateway's configuration: the three models of the benchmark on the loopback upstream.
fn gateway_toml(upstream: &str) -> String {
    let mut toml = format!("upstream = \"http://{upstream}/v1\"\n");
    for (id, window, input, output) in [
        (PRIMARY, 128_000, 0.15, 0.6),
        (BACKUP, 128_000, 2.5, 10.0),
        (FAILING, 4_096, 0.1, 0.1),
    ] {
        toml.push_str(&format!(
            "\n[[models]]\nid = \"{id}\"\ncontext_window = {window}\ninput_price = {input}\noutput_price = {output}\n"
        ));
    }
    toml
}

/// The request body of a scenario: the small chat completion of the shared wrk script, or one
/// padded to `size` bytes with a long user message.
fn request_body(scenario: Scenario, size: Option<usize>) -> Bytes {
    let model = if scenario.fallback() {
        FAILING
    } else {
        PRIMARY
    };
    let models = if scenario.fallback() {
        format!(r#","models":["{BACKUP}"]"#)
    } else {
        String::new()
    };
    let stream = if scenario.stream() {
        r#","stream":true"#
    } else {
        ""
    };
    let head = format!(
        r#"{{"model":"{model}"{models}{stream},"max_tokens":16,"temperature":0,"messages":[{{"role":"system","content":"You are a terse assistant."}},{{"role":"user","content":"Say hello in five words."#
    );
    let tail = r#""}]}"#;
    let mut body = head;
    if let Some(size) = size {
        let filler = " lorem ipsum dolor sit amet,";
        while body.len() + filler.len() + tail.len() <= size {
            body.push_str(filler);
        }
        while body.len() + tail.len() < size {
            body.push('.');
        }
    }
    body.push_str(tail);
    Bytes::from(body)
}

/// What one scenario against one target measured.
struct Measured {
    requests: u64,
    seconds: f64,
    /// Latencies of the measured requests, sorted, in microseconds.
    latencies: Vec<u32>,
    non_2xx: u64,
    errors: u64,
    /// The server's CPU time over the measured window, in milliseconds.
    cpu_ms: Option<f64>,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies.len()) - 1;
        f64::from(self.latencies[index]) / 1000.0
    }

    fn cpu_ms_per_request(&self) -> Option<f64> {
        self.cpu_ms
            .filter(|_| self.requests > 0)
            .map(|ms| ms / self.requests as f64)
    }

    fn line(&self) -> String {
        format!(
            "{:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  non-2xx {}  errors {}",
            self.rps(),
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            self.percentile_ms(99.9),
            self.non_2xx,
            self.errors
        )
    }
}

/// Drives `addr` with `options.conns` connections: warm-up, then the measured window.
async fn drive(
    addr: SocketAddr,
    server_pid: u32,
    scenario: Scenario,
    options: &Options,
    size: Option<usize>,
) -> Result<Measured, String> {
    let body = request_body(scenario, size);
    let uri: Uri = "/v1/chat/completions".parse().map_err(|_| "uri")?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::HOST,
        HeaderValue::from_str(&addr.to_string()).map_err(|_| "host")?,
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let template = Arc::new((uri, headers, body));

    let start = Instant::now();
    let measure_from = start + options.warmup;
    let until = measure_from + options.duration;
    let expected = (options.duration.as_secs_f64() * 100_000.0 / options.conns as f64) as usize;
    let mut tasks = Vec::with_capacity(options.conns);
    for _ in 0..options.conns {
        let template = template.clone();
        tasks.push(tokio::spawn(connection(
            addr,
            template,
            measure_from,
            until,
            expected.min(1 << 20),
        )));
    }
    // The CPU time of the server over the measured window.
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_before = proc_cpu_ms(server_pid);
    tokio::time::sleep_until(until.into()).await;
    let cpu_after = proc_cpu_ms(server_pid);

    let mut measured = Measured {
        requests: 0,
        seconds: options.duration.as_secs_f64(),
        latencies: Vec::new(),
        non_2xx: 0,
        errors: 0,
        cpu_ms: cpu_before.zip(cpu_after).map(|(a, b)| b - a),
    };
    for task in tasks {
        let stats = task.await.map_err(|e| e.to_string())?;
        measured.requests += stats.latencies.len() as u64;
        measured.latencies.extend_from_slice(&stats.latencies);
        measured.non_2xx += stats.non_2xx;
        measured.errors += stats.errors;
    }
    measured.latencies.sort_unstable();
    Ok(measured)
}

#[derive(Default)]
struct ConnStats {
    latencies: Vec<u32>,
    non_2xx: u64,
    errors: u64,
}

/// One client connection: requests one after the other until `until`; those that start after
/// `measure_from` and end before `until` are measured.
async fn connection(
    addr: SocketAddr,
    template: Arc<(Uri, HeaderMap, Bytes)>,
    measure_from: Instant,
    until: Instant,
    expected: usize,
) -> ConnStats {
    let mut stats = ConnStats {
        latencies: Vec::with_capacity(expected),
        ..ConnStats::default()
    };
    let mut sender = None;
    while Instant::now() < until {
        let mut send = match sender.take() {
            Some(send) => send,
            None => match connect(addr).await {
                Ok(send) => send,
                Err(_) => {
                    stats.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (uri, headers, body) = &*template;
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = uri.clone();
        *req.headers_mut() = headers.clone();
        let started = Instant::now();
        let outcome = async {
            let res = send.send_request(req).await?;
            let ok = res.status().is_success();
            let mut body = res.into_body();
            while let Some(frame) = body.frame().await {
                frame?;
            }
            Ok::<_, hyper::Error>(ok)
        }
        .await;
        let ended = Instant::now();
        match outcome {
            Ok(ok) => {
                if started >= measure_from && ended <= until {
                    let micros = ended.duration_since(started).as_micros();
                    stats
                        .latencies
                        .push(u32::try_from(micros).unwrap_or(u32::MAX));
                    if !ok {
                        stats.non_2xx += 1;
                    }
                }
                sender = Some(send);
            }
            Err(_) => stats.errors += 1,
        }
    }
    stats
}

async fn connect(
    addr: SocketAddr,
) -> Result<
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A server process and the address it listens on.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts `command` (pinned to `cpu` with taskset). A role of this binary prints its address
    /// on its first line; for another program, `listen` is the address it was told to use, and
    /// the server is ready when it accepts a connection.
    fn start(
        mut command: Command,
        cpu: Option<&str>,
        listen: Option<SocketAddr>,
    ) -> Result<Self, String> {
        if let Some(cpu) = cpu {
            let mut pinned = Command::new("taskset");
            pinned
                .arg("-c")
                .arg(cpu)
                .arg(command.get_program())
                .args(command.get_args());
            for (key, value) in command.get_envs() {
                if let Some(value) = value {
                    pinned.env(key, value);
                }
            }
            command = pinned;
        }
        command.stdin(Stdio::null()).stderr(Stdio::inherit());
        command.stdout(if listen.is_some() {
            Stdio::null()
        } else {
            Stdio::piped()
        });
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))?;
        let addr = match listen {
            Some(addr) => {
                let deadline = Instant::now() + Duration::from_secs(20);
                while std::net::TcpStream::connect(addr).is_err() {
                    if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
                        let _ = child.kill();
                        return Err(format!(
                            "{:?} did not start listening on {addr}",
                            command.get_program()
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                addr
            }
            None => {
                let stdout = child.stdout.take().ok_or("no stdout")?;
                let mut line = String::new();
                BufReader::new(stdout)
                    .read_line(&mut line)
                    .map_err(|e| e.to_string())?;
                line.trim()
                    .strip_prefix("listening on ")
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| format!("unexpected first line from a role: {line:?}"))?
            }
        };
        Ok(Server { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn role_command(args: &[&str]) -> Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "loadgen".into());
    let mut command = Command::new(exe);
    command.args(args);
    command
}

fn taskset_pid(pid: u32, cpus: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("taskset: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| "taskset failed".into())
}

fn free_port() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// utime + stime of a process, in milliseconds.
fn proc_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks * 10.0)
}

/// A `kB` line of /proc/PID/status (VmRSS:, VmHWM:), in KiB.
fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Roles

/// The `proxy` and `layers` roles' arguments: `UPSTREAM [per-core]`.
fn upstream_arg(args: &[String]) -> Result<(String, bool), String> {
    let upstream = args.get(1).ok_or("the role needs the upstream address")?;
    match args.get(2).map(String::as_str) {
        None => Ok((upstream.clone(), false)),
        Some("per-core") => Ok((upstream.clone(), true)),
        Some(other) => Err(format!("unknown serving mode {other:?}")),
    }
}

/// Serves `role` on the role's listener: on one multi-thread runtime, or `per_core`, the way
/// the gateway does: one current-thread runtime per CPU (`available_parallelism`, which follows
/// taskset), each on its own thread, calling `role` with its own clone of the listener (so that
/// each worker accepts for itself and builds its own client). Returns when a worker fails.
fn serve_role<F, Fut>(per_core: bool, role: F) -> Result<(), String>
where
    F: Fn(TcpListener) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    let listener = listen()?;
    let serve = |role: F, listener: std::io::Result<std::net::TcpListener>, mut rt: Builder| {
        let rt = rt.enable_all().build().map_err(|e| e.to_string())?;
        rt.block_on(async {
            let listener = listener.and_then(TcpListener::from_std);
            role(listener.map_err(|e| e.to_string())?).await
        })
    };
    if !per_core {
        return serve(role, Ok(listener), Builder::new_multi_thread());
    }
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (done, first) = std::sync::mpsc::channel();
    for _ in 0..workers {
        let (role, listener, done) = (role.clone(), listener.try_clone(), done.clone());
        std::thread::spawn(move || {
            let _ = done.send(serve(role, listener, Builder::new_current_thread()));
        });
    }
    first.recv().map_err(|e| e.to_string())?
}

/// Binds the role's listener (non-blocking, for tokio) and prints `listening on ADDR`, the line
/// `Server::start` waits for: on `LOADGEN_LISTEN` when set (to run a role by hand, e.g. under a
/// profiler), else on a free loopback port.
fn listen() -> Result<std::net::TcpListener, String> {
    let addr = std::env::var("LOADGEN_LISTEN").unwrap_or_else(|_| "127.0.0.1:0".into());
    let listener = std::net::TcpListener::bind(addr.as_str()).map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    Ok(listener)
}

/// Accepts connections for ever, serving each with HTTP/1.1 and `service`.
async fn serve_http1<S>(listener: TcpListener, service: S) -> Result<(), String>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<RoleBody>>,
    S: Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RoleBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn boxed<B>(body: B) -> RoleBody
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// The loopback upstream: reads the request, answers from the model in its first bytes.
async fn upstream_role(args: Vec<String>, listener: TcpListener) -> Result<(), String> {
    let failing: Arc<str> = Arc::from(args.get(1).map_or(FAILING, String::as_str));
    let status = args
        .get(2)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_REQUEST);
    let service = service_fn(move |req: Request<Incoming>| {
        let failing = failing.clone();
        async move {
            let mut body = req.into_body();
            // The model and `stream` sit at the start of the benchmark's bodies.
            let mut head = BytesMut::new();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    if head.len() < 256 {
                        head.extend_from_slice(&data[..data.len().min(256 - head.len())]);
                    }
                }
            }
            let model = field(&head, b"\"model\":\"").unwrap_or(b"unknown");
            let model = std::str::from_utf8(model).unwrap_or("unknown");
            if model == &*failing {
                return Ok::<_, hyper::Error>(upstream_error(status, model));
            }
            let stream = head.windows(13).any(|w| w == b"\"stream\":true");
            Ok(if stream {
                sse_answer(model)
            } else {
                json_answer(model)
            })
        }
    });
    serve_http1(listener, service).await
}

/// The bytes after `key` up to the next quote.
fn field<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = body.windows(key.len()).position(|w| w == key)? + key.len();
    let len = body[at..].iter().position(|&b| b == b'"')?;
    Some(&body[at..at + len])
}

fn json_answer(model: &str) -> Response<RoleBody> {
    let body = format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello there, nice to meet."}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":24,"completion_tokens":7,"total_tokens":31}}}}"#
    );
    let mut res = Response::new(boxed(Full::new(Bytes::from(body))));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A short stream: a role chunk, three content chunks, the finish chunk, `[DONE]`, one frame
/// each.
fn sse_answer(model: &str) -> Response<RoleBody> {
    let chunk = |delta: &str, finish: &str| {
        Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        ))
    };
    let frames: VecDeque<Bytes> = VecDeque::from([
        chunk(r#"{"role":"assistant","content":""}"#, "null"),
        chunk(r#"{"content":"Hello"}"#, "null"),
        chunk(r#"{"content":" there,"}"#, "null"),
        chunk(r#"{"content":" nice to meet."}"#, "null"),
        chunk("{}", r#""stop""#),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ]);
    let stream = futures::stream::iter(
        frames
            .into_iter()
            .map(|b| Ok::<_, Infallible>(Frame::data(b))),
    );
    let mut res = Response::new(boxed(StreamBody::new(stream)));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    res
}

fn upstream_error(status: StatusCode, model: &str) -> Response<RoleBody> {
    let body = if status == StatusCode::BAD_REQUEST {
        format!(
            r#"{{"error":{{"message":"This model's maximum context length is 4096 tokens. However, your messages resulted in 5000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}},"model":"{model}"}}"#
        )
    } else {
        r#"{"error":{"message":"The server is overloaded","type":"server_error","code":"overloaded"}}"#.to_owned()
    };
    let mut res = Response::new(boxed(Full::new(Bytes::from(body))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The plain reverse proxy: every request to the upstream unchanged, through one pooled client
/// (one per worker when per core).
async fn proxy_role(upstream: String, listener: TcpListener) -> Result<(), String> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let service = service_fn(move |mut req: Request<Incoming>| {
        let client = client.clone();
        let uri = format!(
            "http://{upstream}{}",
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        async move {
            *req.uri_mut() = uri.parse::<Uri>()?;
            let res = client.request(req).await?;
            Ok::<_, BoxError>(res.map(boxed))
        }
    });
    serve_http1(listener, service).await
}

/// The layers in this binary: the plain proxy's server and client with the routing between
/// them (`FallbackLayer` running an `AutoRouteLayer`'s router, as the gateway does), and nothing
/// else (no axum, no metrics, no timeouts), so that the difference to the proxy is what the
/// layers cost. Per core, each worker builds its own stack (which owns its client).
async fn layers_role(upstream: String, listener: TcpListener) -> Result<(), String> {
    use tower_llm_router::auto_route::{Catalog, ModelProfile};
    use tower_llm_router::{AutoRouteLayer, FallbackLayer, RouterBody};

    let target: Uri = format!("http://{upstream}/v1/chat/completions")
        .parse()
        .map_err(|_| "upstream uri")?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, RouterBody> =
        Client::builder(TokioExecutor::new()).build(connector);
    let catalog = Catalog::from_profiles([
        ModelProfile::new(PRIMARY, 128_000, 0.15, 0.6),
        ModelProfile::new(BACKUP, 128_000, 2.5, 10.0),
        ModelProfile::new(FAILING, 4_096, 0.1, 0.1),
    ]);
    let send = tower::service_fn(move |mut req: Request<RouterBody>| {
        *req.uri_mut() = target.clone();
        client.request(req)
    });
    let stack = tower::ServiceBuilder::new()
        .layer(FallbackLayer::new().auto_route(AutoRouteLayer::new(catalog)))
        .service(send);
    let service = hyper_util::service::TowerToHyperService::new(
        tower::ServiceBuilder::new()
            .map_response(|res: Response<_>| res.map(boxed))
            .service(stack),
    );
    serve_http1(listener, service).await
}

// ---------------------------------------------------------------------------------------------
// Report

fn print_machine(options: &Options) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let memory = proc_meminfo_gib().unwrap_or(0.0);
    println!(
        "machine: {cpus} CPUs ({model}), {memory:.1} GiB; {} connections, {} s warm-up + {} s per scenario{}; gateway: {}\n",
        options.conns,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64(),
        if options.pin { ", server under test pinned to CPU 1, the rest to CPU 0" } else { ", not pinned" },
        options.gateway,
    );
}

fn proc_meminfo_gib() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line["MemTotal:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / (1024.0 * 1024.0))
}

/// One drive of one target with one scenario.
struct Row {
    round: usize,
    target: Target,
    scenario: Scenario,
    measured: Measured,
}

fn print_tables(options: &Options, rows: &[Row], memory: &[(Target, u64, u64)]) {
    let rounds = options.rounds > 1;
    let round_column = if rounds { "| round " } else { "" };
    println!("{round_column}| target | scenario | req/s | p50 ms | p99 ms | p99.9 ms | server CPU ms/req | non-2xx | errors |");
    println!(
        "{}|---|---|---:|---:|---:|---:|---:|---:|---:|",
        if rounds { "|---:" } else { "" }
    );
    for row in rows {
        let m = &row.measured;
        let round = if rounds {
            format!("| {} ", row.round)
        } else {
            String::new()
        };
        println!(
            "{round}| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            row.target.name(),
            row.scenario.name(),
            m.rps(),
            m.percentile_ms(50.0),
            m.percentile_ms(99.0),
            m.percentile_ms(99.9),
            m.cpu_ms_per_request()
                .map_or("-".into(), |ms| format!("{ms:.4}")),
            m.non_2xx,
            m.errors
        );
    }
    if rounds {
        print_medians(options.rounds, rows);
    }
    for baseline in [Target::Proxy, Target::ProxyPerCore] {
        println!();
        for target in [Target::Layers, Target::Gateway] {
            for (plain, routed) in [
                (Scenario::Json, Scenario::Json),
                (Scenario::Sse, Scenario::Sse),
                (Scenario::Big, Scenario::Big),
                (Scenario::Json, Scenario::JsonFallback),
                (Scenario::Sse, Scenario::SseFallback),
            ] {
                print_comparison(rows, baseline, target, plain, routed);
            }
        }
    }
    if !memory.is_empty() {
        let bodies_mib = options.conns as f64 * options.big_bytes as f64 / f64::from(1 << 20);
        println!(
            "\n| target | RSS idle MiB | peak RSS (VmHWM) MiB | peak - idle | conns x body MiB |"
        );
        println!("|---|---:|---:|---:|---:|");
        for (target, idle, peak) in memory {
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
                target.name(),
                mib(*idle),
                mib(*peak),
                mib(peak.saturating_sub(*idle)),
                bodies_mib
            );
        }
    }
}

/// The median of each target and scenario over the rounds.
fn print_medians(rounds: usize, rows: &[Row]) {
    println!("\nMedians over {rounds} rounds:\n");
    println!("| target | scenario | req/s | p50 ms | p99 ms | p99.9 ms | server CPU ms/req |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut seen: Vec<(Target, Scenario)> = Vec::new();
    for row in rows {
        if seen.contains(&(row.target, row.scenario)) {
            continue;
        }
        seen.push((row.target, row.scenario));
        let of = |f: &dyn Fn(&Measured) -> f64| {
            median(
                rows.iter()
                    .filter(|r| r.target == row.target && r.scenario == row.scenario)
                    .map(|r| f(&r.measured))
                    .collect(),
            )
        };
        let cpu = of(&|m| m.cpu_ms_per_request().unwrap_or(f64::NAN));
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} |",
            row.target.name(),
            row.scenario.name(),
            of(&Measured::rps),
            of(&|m| m.percentile_ms(50.0)),
            of(&|m| m.percentile_ms(99.0)),
            of(&|m| m.percentile_ms(99.9)),
            if cpu.is_nan() {
                "-".into()
            } else {
                format!("{cpu:.4}")
            },
        );
    }
}

/// A routing target's `routed` scenario against the `baseline` proxy's `plain` one, round by
/// round (the two ran minutes apart at most); with several rounds, the median and the range.
fn print_comparison(
    rows: &[Row],
    baseline: Target,
    target: Target,
    plain: Scenario,
    routed: Scenario,
) {
    let find = |round: usize, target: Target, scenario: Scenario| {
        rows.iter()
            .find(|r| r.round == round && r.target == target && r.scenario == scenario)
            .map(|r| &r.measured)
    };
    let pairs: Vec<(&Measured, &Measured)> = rows
        .iter()
        .filter(|r| r.target == target && r.scenario == routed)
        .filter_map(|r| Some((&r.measured, find(r.round, baseline, plain)?)))
        .collect();
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|(gateway, proxy)| 100.0 * gateway.rps() / proxy.rps())
        .collect();
    let added: Vec<f64> = pairs
        .iter()
        .map(|(gateway, proxy)| gateway.percentile_ms(99.0) - proxy.percentile_ms(99.0))
        .collect();
    // The server's own cost: steadier than throughput, which also depends on what else ran.
    let cpu: Vec<f64> = pairs
        .iter()
        .filter_map(|(gateway, proxy)| {
            Some(gateway.cpu_ms_per_request()? / proxy.cpu_ms_per_request()?)
        })
        .collect();
    if ratios.is_empty() {
        return;
    }
    let against = match baseline {
        Target::ProxyPerCore => "plain proxy per core",
        _ => baseline.name(),
    };
    let what = if plain == routed {
        format!("{} vs {against}, {}", target.name(), plain.name())
    } else {
        format!(
            "{} {} vs {against} {}",
            target.name(),
            routed.name(),
            plain.name()
        )
    };
    let range = |values: &[f64], unit: &str, sign: bool| {
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        if sign {
            format!("{lo:+.3} to {hi:+.3}{unit}")
        } else {
            format!("{lo:.1} to {hi:.1}{unit}")
        }
    };
    let rounds = ratios.len();
    let spread = if rounds > 1 {
        format!(
            " (median of {rounds} rounds; throughput {}, p99 added {})",
            range(&ratios, "%", false),
            range(&added, " ms", true)
        )
    } else {
        String::new()
    };
    let cpu = if cpu.is_empty() {
        String::new()
    } else {
        format!(", server CPU per request {:.2}x", median(cpu))
    };
    println!(
        "{what}: throughput {:.1}%, p99 added {:+.3} ms{cpu}{spread}",
        median(ratios),
        median(added)
    );
}

/// The median (the mean of the two middle values for an even count); NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}
