//! A small network of hosts for multi-machine tests, built from Linux
//! network namespaces (iproute2's `ip netns`, as root): each host is a
//! namespace with one interface, `eth0`, cabled by a veth pair to a bridge
//! that lives in a namespace of its own (the switch). Traffic between
//! hosts really crosses interfaces and addresses, and nothing of it
//! reaches the machine's own network. Everything is removed on drop.
//!
//! A host's link can be cut and restored (the switch port goes down and
//! up), which is how tests take a machine off the network.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Output, run};

/// Everything needed to run the lab: root, and iproute2's `ip`.
pub fn available() -> Result<(), String> {
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let probe = format!(
        "wkprobe{}-{}",
        std::process::id() % 100_000,
        PROBES.fetch_add(1, Ordering::Relaxed)
    );
    let out = ip(&["netns", "add", &probe]);
    if !out.status.success() {
        return Err(format!("cannot create network namespaces: {}", out.stderr));
    }
    ip(&["netns", "del", &probe]);
    Ok(())
}

fn ip(args: &[&str]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd, None, super::COMMAND_TIMEOUT)
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}{}",
        args.join(" "),
        out.stdout,
        out.stderr
    );
}

/// One machine of the lab.
pub struct Host {
    pub name: String,
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// Its address on the lab network.
    pub ip: Ipv4Addr,
    /// Its cable's end on the switch.
    port: String,
}

/// A network of hosts on one switch.
pub struct Lab {
    switch: String,
    pub hosts: Vec<Host>,
}

impl Lab {
    /// Hosts named `names`, on 10.231.N.0/24 (N unique to this lab), with
    /// addresses .1, .2, … in order.
    pub fn new(names: &[&str]) -> Lab {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}{}", std::process::id() % 10_000, n);
        let subnet = (std::process::id() + n * 37) % 250 + 1;
        let switch = format!("wk{tag}sw");
        ip_ok(&["netns", "add", &switch]);
        let mut lab = Lab {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip_ok(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &switch, "link", "set", "br0", "up"]);
        for (i, name) in names.iter().enumerate() {
            let ns = format!("wk{tag}{i}");
            let port = format!("p{i}");
            let addr = Ipv4Addr::new(10, 231, subnet as u8, i as u8 + 1);
            ip_ok(&["netns", "add", &ns]);
            // Registered at once, so a failure below still cleans it up.
            lab.hosts.push(Host {
                name: name.to_string(),
                ns: ns.clone(),
                ip: addr,
                port: port.clone(),
            });
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            ip_ok(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip_ok(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", &switch, "link", "set", &port, "up"]);
            ip_ok(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lab
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// `program` run on host `name`.
    pub fn command(&self, name: &str, program: &str) -> Command {
        super::in_netns(Some(&self.host(name).ns), program)
    }

    /// Unplugs host `name` from the switch.
    pub fn cut(&self, name: &str) {
        ip_ok(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.host(name).port,
            "down",
        ]);
    }

    /// Plugs host `name` back in.
    pub fn heal(&self, name: &str) {
        ip_ok(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.host(name).port,
            "up",
        ]);
    }

    /// `curl URL` from host `name`: (status, body); status 0 when nothing
    /// answered.
    pub fn curl(&self, name: &str, url: &str) -> (u16, String) {
        self.curl_with(name, &[], url)
    }

    /// [`Lab::curl`] with more of curl's options (`-X POST`, `-H …`).
    pub fn curl_with(&self, name: &str, options: &[&str], url: &str) -> (u16, String) {
        let mut cmd = self.command(name, "curl");
        cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(options)
            .arg(url);
        let out = run(cmd, None, std::time::Duration::from_secs(15));
        let text = out.stdout;
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes still inside a namespace keep it alive: end them first.
        for h in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "pids", &h.ns])
                .output()
                .map(|out| {
                    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
    }
}
