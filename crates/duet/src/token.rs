//! `duet token new NAME ROLE`: a new admin API token, and the line that lets it in.
//!
//! The token is 32 random bytes in hex. Only its SHA-256 goes into the config, so the config
//! (often world-readable, kept in git) never holds a secret.

use duet_config::Role;

/// A new token for `name` with `role`: the token and the `admin.tokens` entry.
pub fn new(name: &str, role: Role) -> Result<(String, String), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if !ok {
        return Err(format!(
            "token name {name:?}: 1 to 64 letters, digits, '-', '_', '.', '@'"
        ));
    }
    let mut token = String::with_capacity(64);
    for _ in 0..4 {
        let r = duet_sys::process::random_u64().map_err(|e| format!("random: {e}"))?;
        token.push_str(&format!("{r:016x}"));
    }
    let hash = duet_config::TokenHash(duet_admin::auth::token_hash(&token));
    let line = format!("{{ name = \"{name}\", role = \"{role}\", sha256 = \"{hash}\" }}");
    Ok((token, line))
}

/// Runs `duet token new`; returns the exit code.
pub fn run_new(name: &str, role: &str) -> i32 {
    let role: Role = match role.parse() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("duet token new: {e}");
            return 2;
        }
    };
    match new(name, role) {
        Ok((token, line)) => {
            println!("{token}");
            eprintln!(
                "Give the token (the line above) to {name}; it is shown only now. Add this to [admin] tokens in each node's config:\n  {line}"
            );
            0
        }
        Err(e) => {
            eprintln!("duet token new: {e}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_is_random_and_its_line_parses_to_its_hash() {
        let (a, line) = new("ops", Role::Operator).unwrap();
        let (b, _) = new("ops", Role::Operator).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        let text = format!("[node]\nname = \"a\"\n\n[admin]\ntokens = [\n  {line},\n]\n");
        let cfg = duet_config::parse("t.toml", &text).unwrap();
        let t = &cfg.admin.unwrap().tokens[0];
        assert_eq!((t.name.as_str(), t.role), ("ops", Role::Operator));
        assert_eq!(t.sha256.0, duet_admin::auth::token_hash(&a));
        assert!(new("two words", Role::Viewer).is_err());
    }
}
