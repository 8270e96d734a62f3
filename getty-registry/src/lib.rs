//! Service registry: publish and discover endpoints (lands with issue 6).
