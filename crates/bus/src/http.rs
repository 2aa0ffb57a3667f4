//! The HTTP adapter: under construction.
