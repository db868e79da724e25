//! The names Envoy's config and the filter share: plugins' VM and root ids,
//! listeners, clusters, the internal headers a route or a filter reads, and
//! the internal redirect's path. Each is written here once: the filter uses
//! the constants, and the CLI passes [`TEMPLATE`] to `envoy/envoy.yaml.j2`
//! as `names`, so the template writes none of them itself. A name changed
//! here changes both ends.

/// The `vm_id` of the gateway's plugins: their shared data and shared queue
/// are keyed by it, so every plugin but the framing repair shares it.
pub const VM_ID: &str = "plano";
/// The framing repair's VM: a network filter that shares no state.
pub const FRAMING_VM_ID: &str = "plano_framing";

/// The gateway filter, on the client listener (any root id the filter does
/// not know gets it too).
pub const GATEWAY_ROOT_ID: &str = "plano";
/// The attempt filter, an upstream filter of [`STREAM_CLUSTER`].
pub const ATTEMPT_ROOT_ID: &str = "plano_attempt";
/// The hedge finder, on [`ATTEMPT_LISTENER`].
pub const HEDGE_FINDER_ROOT_ID: &str = "plano_hedge";
/// The status plugin, on [`STATUS_LISTENER`].
pub const STATUS_ROOT_ID: &str = "plano_status";
/// The framing repair, on each provider cluster's framing listener.
pub const FRAMING_ROOT_ID: &str = "plano_framing";
/// The etcd holder, a bootstrap singleton (`shared_state` only).
pub const SHARED_STATE_ROOT_ID: &str = "plano_shared_state";
/// The Vertex AI token minter, a bootstrap singleton (Vertex targets only).
pub const GOOGLE_TOKENS_ROOT_ID: &str = "plano_google_tokens";

/// The client listener: what a drain takes out of lds.yaml.
pub const CLIENT_LISTENER: &str = "model_listener";
/// The client listener's `stat_prefix`: its stats are `http.plano.*`.
pub const CLIENT_STAT_PREFIX: &str = "plano";
/// The internal listener that is tier two of a streamed attempt and of a
/// hedge: [`STREAM_CLUSTER`] and [`HEDGE_CLUSTER`] lead to it.
pub const ATTEMPT_LISTENER: &str = "plano_attempt";
/// The loopback listener `planoai status` and `top` read.
pub const STATUS_LISTENER: &str = "plano_status";
/// Kubernetes only: the kubelet's probes.
pub const PROBE_LISTENER: &str = "plano_probe";
/// A provider cluster `X`'s connections pass the internal listener
/// `X_framing`, then the internal listener `X_stall` (by the cluster of
/// that name) which closes a silent one, and leave by the cluster `X_direct`.
pub const FRAMING_SUFFIX: &str = "_framing";
pub const STALL_SUFFIX: &str = "_stall";
pub const DIRECT_SUFFIX: &str = "_direct";

/// Every streamed attempt's cluster, past the attempt filter.
pub const STREAM_CLUSTER: &str = "plano_stream";
/// A hedge's cluster: to the attempt listener, past no wasm filter.
pub const HEDGE_CLUSTER: &str = "plano_hedge";
/// The trace collector's cluster (`tracing`).
pub const TRACE_CLUSTER: &str = "plano_otlp";
/// etcd's cluster (`shared_state`).
pub const ETCD_CLUSTER: &str = "plano_etcd";

/// Route header naming the cluster of an attempt that is not streamed.
pub const CLUSTER_HEADER: &str = "x-plano-cluster";
/// Route header for a streamed attempt: the stream cluster, whose upstream
/// filter may turn a failure into an internal redirect.
pub const STREAM_HEADER: &str = "x-plano-stream";
/// The real target's cluster, read by the attempt listener's route.
pub const TARGET_HEADER: &str = "x-plano-target";
/// The exchange a streamed attempt belongs to; the upstream filter takes it off.
pub const EXCHANGE_HEADER: &str = "x-plano-exchange";
/// The attempt's time-to-headers limit: the attempt listener's route for it
/// has that per-try timeout.
pub const TRY_TIMEOUT_HEADER: &str = "x-plano-try-timeout-ms";
/// Marks a reply the attempt listener's router made itself (a timeout or a
/// connection failure), set by its `local_reply_config`. A provider cannot
/// send it: its cluster's upstream filters take it off every answer.
pub const LOCAL_REPLY_HEADER: &str = "x-plano-local-reply";
/// A hedge sent through the stream cluster names its exchange here, so the
/// attempt filter that carries it can reset it when the hedge loses.
pub const HEDGE_HEADER: &str = "x-plano-hedge";

/// The path an internal redirect asks for: the next attempt of an exchange.
pub const NEXT_ATTEMPT_PATH: &str = "/plano/next-attempt";
/// The client listener's route for [`NEXT_ATTEMPT_PATH`], the only route an
/// internal redirect may land on.
pub const NEXT_ATTEMPT_ROUTE: &str = "plano_next_attempt";

/// The status listener's one path: the blocks and client keys' spending
/// `planoai status` and `top` read.
pub const BLOCKS_PATH: &str = "/plano/blocks";

/// What the template calls each name it writes (`{{ names.stream_cluster }}`).
/// The collector's and etcd's clusters reach it with their endpoints
/// (`collector.name`, `shared_state.cluster`); the exchange and hedge
/// headers are the filter's alone.
pub const TEMPLATE: [(&str, &str); 26] = [
    ("vm_id", VM_ID),
    ("framing_vm_id", FRAMING_VM_ID),
    ("gateway_root_id", GATEWAY_ROOT_ID),
    ("attempt_root_id", ATTEMPT_ROOT_ID),
    ("hedge_finder_root_id", HEDGE_FINDER_ROOT_ID),
    ("status_root_id", STATUS_ROOT_ID),
    ("framing_root_id", FRAMING_ROOT_ID),
    ("shared_state_root_id", SHARED_STATE_ROOT_ID),
    ("google_tokens_root_id", GOOGLE_TOKENS_ROOT_ID),
    ("client_listener", CLIENT_LISTENER),
    ("client_stat_prefix", CLIENT_STAT_PREFIX),
    ("attempt_listener", ATTEMPT_LISTENER),
    ("status_listener", STATUS_LISTENER),
    ("probe_listener", PROBE_LISTENER),
    ("framing_suffix", FRAMING_SUFFIX),
    ("stall_suffix", STALL_SUFFIX),
    ("direct_suffix", DIRECT_SUFFIX),
    ("stream_cluster", STREAM_CLUSTER),
    ("hedge_cluster", HEDGE_CLUSTER),
    ("cluster_header", CLUSTER_HEADER),
    ("stream_header", STREAM_HEADER),
    ("target_header", TARGET_HEADER),
    ("try_timeout_header", TRY_TIMEOUT_HEADER),
    ("local_reply_header", LOCAL_REPLY_HEADER),
    ("next_attempt_path", NEXT_ATTEMPT_PATH),
    ("next_attempt_route", NEXT_ATTEMPT_ROUTE),
];
