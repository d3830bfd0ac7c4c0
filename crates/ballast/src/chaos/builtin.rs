//! The built-in scenarios: real outages as scenario files (in `scenarios/`), each with the shared
//! gateway configuration appended.

/// The gateway configuration every built-in runs (primary Claude, secondary GPT, route "chat").
const GATEWAY: &str = include_str!("scenarios/gateway.toml");

/// (name, scenario file text without the gateway).
const BUILTINS: &[(&str, &str)] = &[
    (
        "outage-2026-06-02",
        include_str!("scenarios/outage-2026-06-02.toml"),
    ),
    (
        "outage-2026-06-02-hang",
        include_str!("scenarios/outage-2026-06-02-hang.toml"),
    ),
    (
        "partial-2025-08",
        include_str!("scenarios/partial-2025-08.toml"),
    ),
    (
        "corruption-2025-08",
        include_str!("scenarios/corruption-2025-08.toml"),
    ),
    (
        "rate-limit-storm",
        include_str!("scenarios/rate-limit-storm.toml"),
    ),
    ("brownout", include_str!("scenarios/brownout.toml")),
    (
        "flap-2026-03-02",
        include_str!("scenarios/flap-2026-03-02.toml"),
    ),
    (
        "midstream-cuts",
        include_str!("scenarios/midstream-cuts.toml"),
    ),
];

/// The names of the built-ins, in order.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}

/// A built-in's full scenario text.
pub fn text(name: &str) -> Option<String> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| format!("{t}\n{GATEWAY}"))
}
