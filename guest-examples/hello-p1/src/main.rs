//! `hello-p1`: a WASI preview 1 core module (built for wasm32-wasip1, so it
//! is a plain module exporting `_start`, not a component).

fn main() {
    println!("hello from a core module");
}
