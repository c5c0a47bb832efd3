// Healthcheck of the compose file's `mongodb` service (run by mongosh inside the container):
//   mongosh --quiet --norc --file /medblock/mongodb-replica-set.js
// 1. Initiates the replica set rs0 (one member, mongodb:27017) if it was never initiated: first start,
//    or a fresh volume. Idempotent: an initiated set is left alone, and a concurrent initiate is fine.
// 2. Exits 0 only when this member is the writable primary, so `condition: service_healthy` means
//    "the replica set accepts writes" (transactions and change streams need a replica set).
const REPLICA_SET = { _id: 'rs0', members: [{ _id: 0, host: 'mongodb:27017' }] };

function fail(message) {
  print(`mongodb not ready: ${message}`);
  quit(1);
}

let initiated = true;
try {
  db.adminCommand({ replSetGetStatus: 1 });
} catch (e) {
  if (e.codeName !== 'NotYetInitialized') fail(`replSetGetStatus: ${e.message}`);
  initiated = false;
}

if (!initiated) {
  try {
    db.adminCommand({ replSetInitiate: REPLICA_SET });
    print(`initiated replica set ${REPLICA_SET._id}`);
  } catch (e) {
    if (e.codeName !== 'AlreadyInitialized') fail(`replSetInitiate: ${e.message}`);
  }
}

const hello = db.adminCommand({ hello: 1 });
if (hello.setName !== REPLICA_SET._id) fail(`member of replica set ${JSON.stringify(hello.setName)}, expected ${REPLICA_SET._id}`);
if (!hello.isWritablePrimary) fail('not the writable primary yet');
