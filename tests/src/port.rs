//! Free TCP ports on the loopback interface.
//!
//! The kernel hands out an unused port for a listener bound to port 0; the listener is closed
//! right away so a server can bind the port. Another process may take it in between, so the
//! servers retry on a new port when their bind fails (see `process`).

use std::net::{Ipv4Addr, TcpListener};

/// Returns a free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 always succeeds");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .port()
}

#[cfg(test)]
mod tests {
    use super::free_port;

    #[test]
    fn free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
