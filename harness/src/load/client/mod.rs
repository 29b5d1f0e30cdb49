//! Protocol clients of the load generator: one module per wire protocol, and TLS setup.

pub mod h1;
pub mod h2;
pub mod tls;
