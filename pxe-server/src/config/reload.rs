//! What a reload (SIGHUP) applies now and what waits for a restart.

use super::Config;

/// What a reload (SIGHUP) can change in a running server, and what needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadPlan {
    /// `new`, with every setting that needs a restart kept as it runs now.
    pub effective: Config,
    /// The sections/keys that changed but need a restart (they keep their running values).
    pub needs_restart: Vec<&'static str>,
}

impl Config {
    /// Splits a reload from `self` (running) to `new`: [[hosts]], [boot], the DHCP answer
    /// settings (lease times, subnets, unknown hosts, addresses handed out) and the [xdp]
    /// policy apply at once; sockets, modes, the TFTP engine and the lease database need a
    /// restart.
    pub fn reload_plan(&self, new: &Config) -> ReloadPlan {
        let mut effective = new.clone();
        let mut needs_restart = Vec::new();
        if effective.tftp != self.tftp {
            needs_restart.push("tftp");
            effective.tftp = self.tftp.clone();
        }
        if effective.http != self.http {
            needs_restart.push("http");
            effective.http = self.http.clone();
        }
        if effective.control != self.control {
            needs_restart.push("control");
            effective.control = self.control.clone();
        }
        if effective.metrics != self.metrics {
            needs_restart.push("metrics");
            effective.metrics = self.metrics.clone();
        }
        if effective.store != self.store {
            needs_restart.push("store");
            effective.store = self.store.clone();
        }
        if effective.server != self.server {
            needs_restart.push("server");
            effective.server = self.server.clone();
        }
        // The table's bound and its existence are fixed at start; its stuck time and file
        // classes follow the reload.
        let (j, k) = (&self.journeys, &mut effective.journeys);
        if k.enabled != j.enabled || k.max_hosts != j.max_hosts {
            needs_restart.push("journeys.enabled/journeys.max_hosts");
            k.enabled = j.enabled;
            k.max_hosts = j.max_hosts;
        }
        let (d, e) = (&self.dhcp, &mut effective.dhcp);
        macro_rules! keep {
            ($($field:ident),*) => {$(
                if e.$field != d.$field {
                    needs_restart.push(concat!("dhcp.", stringify!($field)));
                    e.$field = d.$field.clone();
                }
            )*};
        }
        keep!(enabled, mode, interfaces, lease_db);
        let x = (&self.xdp, &mut effective.xdp);
        if x.1.mode != x.0.mode || x.1.interfaces != x.0.interfaces {
            needs_restart.push("xdp.mode/xdp.interfaces");
            x.1.mode = x.0.mode;
            x.1.interfaces = x.0.interfaces.clone();
        }
        ReloadPlan {
            effective,
            needs_restart,
        }
    }
}
