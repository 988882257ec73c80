//! The command line: `--config PATH`, `--listen ADDR` and `--upstream URL` (see [`USAGE`]).

use crate::config::Config;

/// What `--help` prints, and a wrong command line after its error.
pub const USAGE: &str = "usage: gateway [--config PATH] [--listen ADDR] [--upstream URL]

  --config PATH    TOML configuration (see gateway.example.toml)
  --listen ADDR    address to listen on (overrides the file; default 127.0.0.1:8080)
  --upstream URL   default OpenAI-compatible base URL (overrides the file)

With neither --config nor --upstream, the gateway starts in front of simulated providers.";

/// The command line's values.
#[derive(Clone, Debug, Default)]
pub struct Args {
    /// `--config PATH`: the TOML configuration.
    pub config: Option<String>,
    /// `--listen ADDR`: in place of the file's `listen`.
    pub listen: Option<String>,
    /// `--upstream URL`: in place of the file's `upstream`.
    pub upstream: Option<String>,
}

impl Args {
    /// Puts `--listen` and `--upstream`, when given, in place of the file's values.
    pub fn override_file(self, config: &mut Config) {
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(upstream) = self.upstream {
            config.upstream = upstream;
        }
    }
}

/// The arguments after the program's name, each flag as `--flag VALUE` or `--flag=VALUE`.
/// `Err` with an empty message for `-h` / `--help` (the caller prints [`USAGE`] and exits 0),
/// else with what is wrong.
pub fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let slot = match flag.as_str() {
            "--config" => &mut parsed.config,
            "--listen" => &mut parsed.listen,
            "--upstream" => &mut parsed.upstream,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        };
        let value = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        *slot = Some(value);
    }
    Ok(parsed)
}
