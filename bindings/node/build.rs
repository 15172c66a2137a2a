//! Sets up linking of a Node-API addon.
fn main() {
    napi_build::setup();
}
