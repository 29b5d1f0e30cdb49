//! Exporter tests.
