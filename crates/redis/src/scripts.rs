//! The scope's server-side steps: one Lua script each (`scripts/*.lua`, after the shared
//! `prelude.lua`, but `release.lua` which needs none of it), so that no interleaving of clients can break a queue. Each takes one
//! name's four keys ([`NameKeys::script_keys`](crate::keys::NameKeys::script_keys)).

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(include_str!("scripts/prelude.lua"), "\n", include_str!($file)))
    };
    (bare $file:literal) => {
        Script::new(include_str!($file))
    };
}

/// The scripts, loaded once per connection by their SHA (`EVALSHA`, `SCRIPT LOAD` on a miss).
pub struct Scripts {
    /// Queues a request (see `enqueue.lua`).
    pub enqueue: Script,
    /// Where a request stands (see `standing.lua`).
    pub standing: Script,
    /// Gives a request back (see `release.lua`).
    pub release: Script,
    /// Keeps a session alive for a name (see `renew.lua`).
    pub renew: Script,
    /// Moves a held request to the back if anyone waits (see `cede.lua`).
    pub cede: Script,
    /// The live requests of a name (see `live.lua`).
    pub live: Script,
}

impl Scripts {
    /// The scripts.
    pub fn new() -> Scripts {
        Scripts {
            enqueue: script!("scripts/enqueue.lua"),
            standing: script!("scripts/standing.lua"),
            release: script!(bare "scripts/release.lua"),
            renew: script!("scripts/renew.lua"),
            cede: script!("scripts/cede.lua"),
            live: script!("scripts/live.lua"),
        }
    }
}

impl Default for Scripts {
    fn default() -> Scripts {
        Scripts::new()
    }
}
