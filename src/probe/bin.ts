#!/usr/bin/env node
// Standalone entry: node dist/src/probe/bin.js --target … (the main CLI calls probeMain too).
import { probeMain } from './cli.js';

process.exitCode = await probeMain(process.argv.slice(2));
