//! The environment as configuration input: `${VAR}` interpolation, and the default configuration built
//! from provider keys in the environment when no file is given.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::{ConfigError, ConfigErrors};
use crate::provider::ProviderKind;

/// Where `${VAR}` values come from; injected so tests do not touch the process environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed map, for tests.
pub struct MapEnv(HashMap<String, String>);

impl MapEnv {
    pub fn new(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Replaces every `${NAME}` in `value` with the variable's value. `$$` is a literal `$`.
pub fn interpolate(value: &str, env: &dyn Env) -> Result<String, String> {
    if !value.contains('$') {
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = after.strip_prefix('{') {
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed \"${{\" in {value:?}"));
            };
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            match env.var(name) {
                Some(v) => out.push_str(&v),
                None => return Err(format!("environment variable {name} is not set")),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The environment variable conventionally holding a provider kind's key.
pub const fn key_var(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
        ProviderKind::OpenAi => "OPENAI_API_KEY",
        ProviderKind::Gemini => "GEMINI_API_KEY",
        ProviderKind::OpenAiCompatible => "OPENAI_COMPATIBLE_API_KEY",
    }
}

/// A configuration built from the environment when no file is given: one provider per key found
/// (`ANTHROPIC_API_KEY`, `OPENAI_API_KEY`, `GEMINI_API_KEY`, `OLLAMA_HOST`), a route per provider's
/// flagship model, and a `default` route that falls over across all of them in that order.
///
/// Returns the TOML text (so the user can see and save exactly what runs) or an error naming what to set.
pub fn default_config_toml(env: &dyn Env) -> Result<String, ConfigErrors> {
    struct Found {
        name: &'static str,
        kind: ProviderKind,
        base_url: Option<String>,
        key_var: Option<&'static str>,
        models: Vec<String>,
    }
    let mut found = Vec::new();
    let present = |k: &str| env.var(k).is_some_and(|v| !v.trim().is_empty());
    if present("ANTHROPIC_API_KEY") {
        found.push(Found {
            name: "anthropic",
            kind: ProviderKind::Anthropic,
            base_url: None,
            key_var: Some("ANTHROPIC_API_KEY"),
            models: vec!["claude-sonnet-4-5".into(), "claude-haiku-4-5".into()],
        });
    }
    if present("OPENAI_API_KEY") {
        found.push(Found {
            name: "openai",
            kind: ProviderKind::OpenAi,
            base_url: None,
            key_var: Some("OPENAI_API_KEY"),
            models: vec!["gpt-4.1".into(), "gpt-4.1-mini".into()],
        });
    }
    if present("GEMINI_API_KEY") {
        found.push(Found {
            name: "gemini",
            kind: ProviderKind::Gemini,
            base_url: None,
            key_var: Some("GEMINI_API_KEY"),
            models: vec!["gemini-2.5-flash".into(), "gemini-2.5-pro".into()],
        });
    }
    if let Some(host) = env.var("OLLAMA_HOST").filter(|h| !h.trim().is_empty()) {
        let host = host.trim().trim_end_matches('/');
        let base = if host.starts_with("http://") || host.starts_with("https://") {
            host.to_owned()
        } else {
            format!("http://{host}")
        };
        let model = env
            .var("OLLAMA_MODEL")
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| "llama3.2".to_owned());
        found.push(Found {
            name: "ollama",
            kind: ProviderKind::OpenAiCompatible,
            base_url: Some(format!("{base}/v1")),
            key_var: None,
            models: vec![model],
        });
    }
    if found.is_empty() {
        return Err(ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: "no configuration: no --config given, no ./ballast.toml, and none of \
                      ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY or OLLAMA_HOST is set.\n\
                      Set one of them (e.g. `export ANTHROPIC_API_KEY=sk-ant-...`), write a config \
                      (see examples/ballast.toml), or try `ballast demo` for a keyless demo on a \
                      built-in simulator."
                .to_owned(),
        }]));
    }
    let mut toml =
        String::from("# Built from the environment by `ballast serve` (no config file given).\n");
    for f in &found {
        let _ = write!(toml, "\n[providers.{}]\nkind = \"{}\"\n", f.name, f.kind);
        if let Some(b) = &f.base_url {
            let _ = writeln!(toml, "base_url = \"{b}\"");
        }
        if let Some(k) = f.key_var {
            let _ = writeln!(toml, "api_key = \"${{{k}}}\"");
        }
    }
    for f in &found {
        for m in &f.models {
            let _ = write!(toml, "\n[routes.\"{m}\"]\ntargets = [\"{}/{m}\"]\n", f.name);
        }
    }
    let defaults: Vec<String> = found
        .iter()
        .map(|f| format!("\"{}/{}\"", f.name, f.models[0]))
        .collect();
    let _ = write!(
        toml,
        "\n[routes.default]\ntargets = [{}]\n",
        defaults.join(", ")
    );
    Ok(toml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn interpolation() {
        let env = MapEnv::new(&[("A", "x"), ("B_2", "y")]);
        assert_eq!(interpolate("plain", &env), Ok("plain".into()));
        assert_eq!(interpolate("${A}-${B_2}", &env), Ok("x-y".into()));
        assert_eq!(
            interpolate("cost $5 and $$HOME", &env),
            Ok("cost $5 and $HOME".into())
        );
        assert_eq!(
            interpolate("${NOPE}", &env),
            Err("environment variable NOPE is not set".into())
        );
        assert!(interpolate("${A", &env).is_err());
        assert!(interpolate("${A B}", &env).is_err());
    }

    #[test]
    fn default_config_from_keys_validates_and_orders_failover() {
        let env = MapEnv::new(&[
            ("ANTHROPIC_API_KEY", "a"),
            ("GEMINI_API_KEY", "g"),
            ("OLLAMA_HOST", "127.0.0.1:11434"),
        ]);
        let text = default_config_toml(&env).unwrap();
        let c = Config::from_toml(&text, &env).unwrap();
        let default = c.routes.iter().find(|r| r.name == "default").unwrap();
        let kinds: Vec<_> = default
            .targets
            .iter()
            .map(|t| c.provider(t.provider).kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                ProviderKind::Anthropic,
                ProviderKind::Gemini,
                ProviderKind::OpenAiCompatible
            ]
        );
        let ollama = c.providers.iter().find(|p| p.name == "ollama").unwrap();
        assert_eq!(ollama.base_url, "http://127.0.0.1:11434/v1");
        assert!(c.routes.iter().any(|r| r.name == "claude-sonnet-4-5"));
    }

    #[test]
    fn no_keys_says_what_to_set() {
        let e = default_config_toml(&MapEnv::new(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ANTHROPIC_API_KEY") && e.contains("ballast demo"),
            "{e}"
        );
    }
}
