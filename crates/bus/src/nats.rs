//! The NATS adapter: under construction.
