//! The TCP echo: writes the identity lines (unless told not to), then echoes every byte it receives.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::Identity;

pub async fn serve(listener: TcpListener, id: Arc<Identity>, greeting: bool) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            continue;
        };
        let id = id.clone();
        tokio::spawn(async move {
            let hello = format!(
                "ServiceVersion={}\nServicePort={port}\nIP={}\nProto=TCP\nHostname={}\nService={}\n",
                id.version,
                peer.ip(),
                id.hostname,
                id.service
            );
            if greeting && stream.write_all(hello.as_bytes()).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        // The client half-closed: pass it on.
                        let _ = stream.shutdown().await;
                        return;
                    }
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}
