fn main() {
    eprintln!("raft-kv: not implemented yet (see the raft-kv issue)");
    std::process::exit(2);
}
