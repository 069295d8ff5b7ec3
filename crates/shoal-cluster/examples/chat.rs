//! A chat room's log, with your own schema and merge, on three nodes in one process.
//!
//! A message is keyed by its room (the partition key: a room's messages live together, on the
//! same replicas) and by its time and author (the sort key: the log reads in order). Its text
//! is last-writer-wins, so an edit made on one node and a concurrent edit on another settle on
//! the later one everywhere; deleting raises a flag that no later merge can lower.
//!
//! Run: `cargo run -p shoal-cluster --example chat`

use serde::{Deserialize, Serialize};
use shoal_cluster::local::LocalCluster;
use shoal_cluster::tables::{ReplicatedTable, TableOptions};
use shoal_net::TcpTransport;
use shoal_storage::KeyRange;
use shoal_table::codec::{Initial, Versioned};
use shoal_table::crdt::{Flag, Lww, Stamp};
use shoal_table::{Entry, Schema, engine_key};

/// One message of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Message {
    room: String,
    /// `{millis:020}-{author}`: sorts by time, then author.
    id: String,
    author: String,
    text: Lww<String>,
    deleted: Flag,
}
// The keys and the author never change; the text and the flag merge.
shoal_table::crdt_struct!(Message { text, deleted });

impl Versioned for Message {
    const VERSION_MARKER: &'static [u8] = b"Emsg1";
    type Previous = Initial;
    fn migrate(p: Initial) -> Self {
        match p {}
    }
}

impl Entry<String, String> for Message {
    fn partition_key(&self) -> &String {
        &self.room
    }
    fn sort_key(&self) -> &String {
        &self.id
    }
    fn is_tombstone(&self) -> bool {
        // A deleted message stays in the log as "deleted", so it is not a tombstone.
        false
    }
}

struct Chat;
impl Schema for Chat {
    const TABLE_NAME: &'static str = "chat";
    type PartitionKey = String;
    type SortKey = String;
    type Entry = Message;
}

type Room = ReplicatedTable<Chat, TcpTransport>;

/// Posts `text` as `author` at `at` (milliseconds) through `table`'s node.
async fn post(table: &Room, room: &str, author: &str, at: u64, text: &str) -> Message {
    let message = Message {
        room: room.into(),
        id: format!("{at:020}-{author}"),
        author: author.into(),
        text: Lww::new(Stamp::new(at, table.node().id()), text.into()),
        deleted: Flag::unset(),
    };
    table.insert(&message).await.expect("posted at quorum");
    message
}

/// The room's log as one node reads it at quorum.
async fn log(table: &Room, room: &str) -> Vec<String> {
    let prefix = KeyRange::prefix(&engine_key(&room.to_string(), &()));
    let messages = table
        .range(&room.to_string(), prefix, false, 100)
        .await
        .expect("read at quorum");
    messages
        .iter()
        .map(|m| {
            let text = if m.deleted.is_set() {
                "(deleted)"
            } else {
                m.text.get()
            };
            format!("{}: {}", m.author, text)
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Three nodes, two replicas of each partition: a room lives on two of them, and the
    // third reaches it over the network.
    let cluster = LocalCluster::start(dir.path(), 3, 2).await?;
    let mut rooms = Vec::new();
    for n in cluster.nodes() {
        rooms.push(
            n.node
                .open_table::<Chat>(&n.store, TableOptions::default())
                .await?,
        );
    }
    let (a, b, c) = (&rooms[0], &rooms[1], &rooms[2]);

    post(a, "lobby", "ada", 1_000, "hello").await;
    let typo = post(b, "lobby", "bob", 2_000, "hi ada, how r u").await;
    post(c, "lobby", "cy", 3_000, "morning both").await;
    let spam = post(a, "lobby", "eve", 4_000, "buy now!!!").await;

    // Bob fixes his typo from node 2 while a stale client replays the old text from node 3
    // with an earlier stamp: the later edit wins on every replica.
    let mut fixed = typo.clone();
    fixed.text.set(
        Stamp::new(5_000, b.node().id()),
        "hi ada, how are you?".into(),
    );
    let mut stale = typo.clone();
    stale
        .text
        .set(Stamp::new(4_500, c.node().id()), "hi ada, how r u".into());
    let (r1, r2) = tokio::join!(b.insert(&fixed), c.insert(&stale));
    r1?;
    r2?;

    // A moderator on node 1 deletes the spam.
    let mut removed = spam.clone();
    removed.deleted.raise();
    a.insert(&removed).await?;

    for (i, room) in rooms.iter().enumerate() {
        let lines = log(room, "lobby").await;
        println!("node {} reads the lobby:", i + 1);
        for l in &lines {
            println!("  {l}");
        }
        assert_eq!(
            lines,
            [
                "ada: hello",
                "bob: hi ada, how are you?",
                "cy: morning both",
                "eve: (deleted)"
            ]
        );
    }

    // Which two nodes store the lobby (its partition's replicas in the layout).
    let partition = engine_key(&"lobby".to_string(), &())[0];
    let holders = a.node().nodes_for("chat", partition);
    let held: Vec<usize> = cluster
        .nodes()
        .iter()
        .enumerate()
        .filter(|(_, n)| holders.contains(&n.node.id()))
        .map(|(i, _)| i + 1)
        .collect();
    println!("the lobby is stored on nodes {held:?} (partition {partition})");
    cluster.close().await;
    Ok(())
}
