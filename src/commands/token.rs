//! `mcpgw token create`: a bearer token for the gateway that uses this data directory.

use anyhow::bail;

use crate::access::Role;
use crate::cli::{TokenRole, UsageError};
use crate::config::{DEFAULT_DATA_DIR, GlobalPaths};

/// Parse `30m`, `12h`, `7d`, `3600s` or plain seconds.
pub fn parse_ttl(text: &str) -> Result<i64, UsageError> {
    let bad = || {
        UsageError(format!(
            "invalid --ttl '{text}': expected a duration such as 30m, 12h or 7d"
        ))
    };
    let (num, unit) = text.trim().split_at(
        text.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.trim().len()),
    );
    let n: i64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(bad()),
    };
    if secs <= 0 || secs > 366 * 86400 {
        return Err(UsageError(format!(
            "invalid --ttl '{text}': expected between 1s and 366d"
        )));
    }
    Ok(secs)
}

/// Print a token.
pub fn create(
    globals: &GlobalPaths,
    ttl: &str,
    sub: &str,
    role: TokenRole,
    scopes: &[String],
    json: bool,
) -> anyhow::Result<()> {
    let ttl = parse_ttl(ttl)?;
    if sub.is_empty() || sub.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(UsageError(
            "--sub must be a name without white space".into()
        ));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        bail!(UsageError(format!(
            "invalid --scope {bad:?}: a scope is one word without white space"
        )));
    }
    let role = match role {
        TokenRole::Client => Role::Client,
        TokenRole::Admin => Role::Admin,
    };
    let data_dir = globals
        .data_dir
        .clone()
        .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    let secret = crate::http::auth::read_secret(&data_dir)?;
    let grant = crate::http::auth::Grant {
        sub,
        role,
        scopes,
        ttl_secs: ttl,
    };
    let token = crate::http::auth::mint(&secret, &grant)?;
    if json {
        return super::print_json(&serde_json::json!({
            "token": token, "ttl_s": ttl, "sub": sub, "role": role.as_str(), "scopes": scopes,
        }));
    }
    println!("{token}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("0").is_err());
    }
}
