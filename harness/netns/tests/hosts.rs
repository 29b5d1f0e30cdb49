//! Hosts on the wire: two hosts reach each other over the bridge, a host's DNS is its hosts file,
//! sockets made in a host belong to it, SYNs are counted, and Istio's outbound capture redirects
//! everything but the proxy's group and loopback. Needs root, iproute2, iptables and setpriv;
//! without them each test says why and passes.

#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a failure should panic.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};

use mesh_netns::{Host, Net, NOWHERE, PROXY_GID};

fn skip() -> bool {
    match mesh_netns::unavailable() {
        Some(why) => {
            eprintln!("skipped: {why}");
            true
        }
        None => false,
    }
}

/// Serves one connection at a time on `listener`: answers with the peer's address and the port
/// it was reached on.
fn tell_peer(listener: std::net::TcpListener) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let line = format!("{} {}\n", s.peer_addr().unwrap().ip(), s.local_addr().unwrap().port());
            let _ = s.write_all(line.as_bytes());
        }
    });
}

fn ask(from: &Host, to: SocketAddr) -> std::io::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::AsyncReadExt;
        let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), from.connect(to))
            .await
            .map_err(|_| std::io::Error::other("connect timeout"))??;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    })
}

#[test]
fn hosts_have_addresses_of_their_own_and_reach_each_other() {
    if skip() {
        return;
    }
    let mut net = Net::new().unwrap();
    let (a, b) = (net.host("a").unwrap(), net.host("b").unwrap());
    assert_eq!(
        (a.ip, b.ip),
        (Ipv4Addr::new(10, 251, 0, 2), Ipv4Addr::new(10, 251, 0, 3))
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(b.listen(SocketAddr::from((b.ip, 0)))).unwrap();
    let port = listener.local_addr().unwrap().port();
    tell_peer(listener);
    b.count_syns().unwrap();
    assert_eq!(b.syns().unwrap(), 0);
    // From a, over the bridge: b sees a's address.
    assert_eq!(
        ask(&a, SocketAddr::from((b.ip, port))).unwrap(),
        format!("{} {port}\n", a.ip)
    );
    assert_eq!(b.syns().unwrap(), 1);
    // b's listener is not in this process's own namespace.
    assert!(std::net::TcpStream::connect(SocketAddr::from((b.ip, port))).is_err());
    // Nothing answers at NOWHERE, and no SYN reaches b for it.
    assert!(ask(&a, SocketAddr::new(NOWHERE.into(), port)).is_err());
    assert_eq!(b.syns().unwrap(), 1);
    // `within`: blocking code inside a host.
    let to = SocketAddr::from((b.ip, port));
    let got = a.within(move || {
        let mut s = std::net::TcpStream::connect(to).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    });
    assert_eq!(got, format!("{} {port}\n", a.ip));
    // Removed with the net.
    let ns = a.ns.clone();
    drop(net);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&ns));
    assert!(!std::path::Path::new("/etc/netns").join(&ns).exists());
}

#[test]
fn a_hosts_file_is_its_dns_and_capture_spares_the_proxy_and_loopback() {
    if skip() {
        return;
    }
    let mut net = Net::new().unwrap();
    let (app, ext) = (net.host("app").unwrap(), net.host("ext").unwrap());
    app.resolve(&[("api.example.com", ext.ip)]).unwrap();
    let hosts = std::fs::read_to_string(format!("/etc/netns/{}/hosts", app.ns)).unwrap();
    assert_eq!(hosts, format!("127.0.0.1 localhost\n{} api.example.com\n", ext.ip));
    let out = app
        .command("getent")
        .args(["hosts", "api.example.com"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&ext.ip.to_string()));
    // A "sidecar" on 15001 and an external service on 80.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tell_peer(
        rt.block_on(app.listen(SocketAddr::from(([0, 0, 0, 0], 15001))))
            .unwrap(),
    );
    tell_peer(rt.block_on(ext.listen(SocketAddr::from((ext.ip, 80)))).unwrap());
    app.capture_outbound().unwrap();
    // The app's connection to the external service is redirected to 15001 (from its own address).
    let got = ask(&app, SocketAddr::from((ext.ip, 80))).unwrap();
    assert_eq!(got, format!("{} 15001\n", app.ip));
    // Loopback is not captured: a local service answers on its own port.
    tell_peer(
        rt.block_on(app.listen(SocketAddr::from(([127, 0, 0, 1], 9999))))
            .unwrap(),
    );
    assert_eq!(
        ask(&app, SocketAddr::from(([127, 0, 0, 1], 9999))).unwrap(),
        "127.0.0.1 9999\n"
    );
    // The proxy's group is not captured: it reaches the external service itself.
    let out = app
        .proxy_command("bash")
        .args(["-c", &format!("exec 3<>/dev/tcp/{}/80; cat <&3; id -g", ext.ip)])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{} 80\n{PROXY_GID}\n", app.ip),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
