// Ledger writer thread entry: the worker needs tsx's loader for TypeScript whether or not the parent was started with it.
import { register } from 'tsx/esm/api';

register();
await import('./ledger-writer-thread.ts');
