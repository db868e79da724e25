use std::path::PathBuf;

use clap::{value_parser, Args, Parser, Subcommand, ValueEnum};

use crate::logfile;

#[derive(Parser)]
#[command(
    name = "planoai",
    version,
    about = "Run the Plano LLM gateway: retries and failover for OpenAI-compatible chat completions",
    after_help = "Start with `planoai up configs/demo.yaml`, then send requests to http://localhost:12000/v1/chat/completions."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Validate CONFIG, render Envoy's config and start the gateway in the background, or apply CONFIG to the running one
    #[command(
        after_help = "On a running gateway, a config that changes only providers, policies and timeouts is\napplied without a restart: requests in flight finish under the old config, blocks are\nkept, and `up` lists what changed. A new port, worker count, mode or Envoy restarts it,\nafter letting what it serves finish (30 s at most). A bad config changes nothing.\n\nExamples:\n  planoai up configs/demo.yaml\n  planoai up --watch configs/demo.yaml\n  planoai up --docker configs/demo.yaml\n  planoai up --foreground configs/demo.yaml"
    )]
    Up(UpArgs),
    /// Stop the running gateway after what it serves finishes (a no-op when none runs)
    #[command(after_help = "Examples:\n  planoai down\n  planoai down --drain-seconds 60")]
    Down(DownArgs),
    /// Check CONFIG and report every problem found, with its line and field
    #[command(
        after_help = "An access key's unset environment variable ($VAR) is a warning here, so a config\ncan be checked before its secrets are at hand (in CI); `planoai up` refuses it.\nWith --strict, or --env-file, it is an error.\n\nExamples:\n  planoai validate configs/demo.yaml\n  planoai validate --strict configs/providers.yaml\n  planoai validate --env-file prod.env configs/providers.yaml"
    )]
    Validate(ValidateArgs),
    /// Write envoy.yaml and the filter's .wasm to DIR, to run Envoy elsewhere (e.g. a Kubernetes sidecar)
    #[command(
        after_help = "Example:\n  planoai render configs/demo.yaml -o dist/\n  envoy -c dist/envoy.yaml"
    )]
    Render(RenderArgs),
    /// Show whether a gateway runs, where, since when, and its current blocks
    #[command(after_help = "Example:\n  planoai status")]
    Status,
    /// A live view of the gateway per model and deployment: requests/s, success %, failovers/s, 429s, blocks, p50 time to first byte
    #[command(
        after_help = "Refreshed every second; q (or Esc, Ctrl-C) quits. When the output is not a\nterminal, prints one snapshot (rates over one second) and exits.\n\nExamples:\n  planoai top\n  planoai top | cat"
    )]
    Top,
    /// Print the gateway's log: one line per attempt (-f to follow)
    #[command(
        after_help = "Each attempt: time, request id, attempt, target, outcome, latency, wait.\nAccess keys are redacted in every mode.\n\nExamples:\n  planoai logs -f\n  planoai logs --json -n 1000 | jq 'select(.outcome != \"200\")'\n  planoai logs --envoy"
    )]
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Lines to show from the end
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
        /// JSON lines instead of text
        #[arg(long, conflicts_with = "envoy")]
        json: bool,
        /// Envoy's raw log, its own lines included
        #[arg(long)]
        envoy: bool,
    },
    /// Build the gateway's container image (offline, from this machine's Envoy)
    #[command(
        after_help = "Examples:\n  planoai build\n  planoai build --base-image envoyproxy/envoy:v1.40.0"
    )]
    Build(BuildArgs),
    /// Write a commented starter config
    #[command(
        after_help = "Examples:\n  planoai init\n  planoai init --provider openai --provider anthropic -o gateway.yaml\n  planoai init --provider openai/gpt-4o-mini --provider groq"
    )]
    Init(InitArgs),
    /// Print the JSON Schema of the gateway YAML, for editors and CI
    #[command(
        after_help = "The repository ships it as schema/gateway.schema.json; a config whose first line is\n  # yaml-language-server: $schema=../schema/gateway.schema.json\ngets completion and checking as you type in editors with YAML support.\n\nExample:\n  planoai schema > gateway.schema.json"
    )]
    Schema,
    /// Prints a reference page of the docs (docs/reference/), generated so it cannot drift
    #[command(hide = true)]
    Reference {
        #[arg(value_enum)]
        page: ReferencePage,
    },
    /// Copies stdin (Envoy's output) to PATH, rotating it under a size cap
    #[command(hide = true)]
    LogWriter {
        path: PathBuf,
        #[arg(long)]
        max_bytes: u64,
        #[arg(long)]
        files: u32,
    },
}

#[derive(Args)]
pub struct UpArgs {
    /// The gateway's YAML config
    pub config: PathBuf,
    /// Run the gateway as a Docker container instead of a local process
    #[arg(long)]
    pub docker: bool,
    /// Stay attached; Ctrl-C stops the gateway
    #[arg(long)]
    pub foreground: bool,
    /// Stay, and apply CONFIG again each time it is saved; Ctrl-C stops
    /// watching and leaves the gateway running
    #[arg(long, conflicts_with = "foreground")]
    pub watch: bool,
    /// Envoy worker threads (1 to 256)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: u32,
    /// Largest size of one log file (natively envoy.log, in Docker the
    /// container's log), e.g. 512k, 10M, 1G
    #[arg(long, value_name = "SIZE", default_value = logfile::DEFAULT_MAX_SIZE, value_parser = logfile::parse_size)]
    pub log_max_size: u64,
    /// Log files kept, rotated ones included: the log never takes more than
    /// SIZE times this
    #[arg(long, value_name = "N", default_value_t = logfile::DEFAULT_MAX_FILES, value_parser = value_parser!(u32).range(1..=100))]
    pub log_max_files: u32,
}

impl UpArgs {
    pub fn log_cap(&self) -> logfile::LogCap {
        logfile::LogCap {
            max_bytes: self.log_max_size,
            files: self.log_max_files,
        }
    }
}

#[derive(Args)]
pub struct ValidateArgs {
    /// The gateway's YAML config
    pub config: PathBuf,
    /// An unset environment variable is an error, as it is for `up`
    #[arg(long)]
    pub strict: bool,
    /// Read variables from FILE (KEY=VALUE lines) after the environment;
    /// implies --strict
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct InitArgs {
    /// A provider (`openai`) or a model at one (`openai/gpt-4o-mini`); repeat
    /// it for fallbacks, tried in the order given
    #[arg(long, value_name = "PROVIDER", default_values_t = ["openai".to_string(), "anthropic".to_string()])]
    pub provider: Vec<String>,
    /// Where to write it
    #[arg(short, long, default_value = "plano.yaml")]
    pub output: PathBuf,
    /// Overwrite the file if it exists
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct DownArgs {
    /// Stop the Docker container (any running gateway is stopped either way)
    #[arg(long)]
    pub docker: bool,
    /// Stop taking connections and wait at most this long for the requests
    /// and streams in flight to finish (0: stop at once)
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
}

#[derive(Args)]
pub struct RenderArgs {
    /// The gateway's YAML config
    pub config: PathBuf,
    /// Output directory
    #[arg(short, long, default_value = "dist")]
    pub output: PathBuf,
    /// Path at which Envoy will find the .wasm (default: beside envoy.yaml)
    #[arg(long)]
    pub wasm_path: Option<String>,
    /// Directory in which Envoy will find the written files (envoy.yaml,
    /// lds.yaml, cds.yaml, the key files), e.g. where a container mounts
    /// DIR (default: DIR itself)
    #[arg(long)]
    pub config_dir: Option<String>,
    /// Also write kubernetes.yaml: the config as a Secret and a Deployment
    /// running Envoy as a sidecar beside your app
    #[arg(long)]
    pub kubernetes: bool,
}

#[derive(Args)]
pub struct BuildArgs {
    /// Base image; the default, scratch, needs no registry
    #[arg(long, default_value = "scratch")]
    pub base_image: String,
}

/// The generated pages of docs/reference/.
#[derive(Clone, Copy, ValueEnum)]
pub enum ReferencePage {
    /// docs/reference/config.md, from the config's JSON Schema
    Config,
    /// docs/reference/cli.md, from this CLI's help
    Cli,
}
