/**
 * The MongoDB vault's format marker: `vault_format {_id: 'format', version}`. A database holding versions
 * written in another format (before salted commitments: no marker at all) is refused at start-up, never
 * migrated blindly; the SQLite vault does the same with its schema version.
 */
import type { Db } from 'mongodb';
import { isDuplicateKey } from './driver.ts';

/** Bumped when what is stored changes incompatibly. 2: versions anchored with salted commitments. */
export const VAULT_FORMAT = 2;
const DESCRIPTION = 'encrypted, anchored with salted commitments';

interface FormatDoc {
  _id: 'format';
  version: number;
}

export async function checkVaultFormat(db: Db): Promise<void> {
  const formats = db.collection<FormatDoc>('vault_format');
  let marker = await formats.findOne({ _id: 'format' });
  if (!marker && !(await db.collection('versions').findOne({}, { projection: { _id: 1 } }))) {
    try {
      await formats.insertOne({ _id: 'format', version: VAULT_FORMAT });
    } catch (e) {
      if (!isDuplicateKey(e)) throw e;
    }
    marker = await formats.findOne({ _id: 'format' });
  }
  const found = marker?.version ?? 1;
  if (found !== VAULT_FORMAT) {
    throw new Error(
      `database ${db.databaseName} is a vault of format ${found}, this gateway uses format ${VAULT_FORMAT} (${DESCRIPTION}) ` +
        'and does not migrate vaults: export the data with the gateway version that wrote it and import it into a ' +
        'new database (docs/proofs.md, "Vaults written before commitments")',
    );
  }
}
