/** How client commands reach the engine of a pool directory: DIR/engine.sock. */
import { EngineClient } from '../engine/api/client.ts';
import { poolSockets } from '../engine/socket-path.ts';

/** Runs `use` with a client of the engine serving `dataDir`, and always closes the client. */
export async function withEngine<T>(dataDir: string, use: (client: EngineClient) => Promise<T>): Promise<T> {
  const client = EngineClient.connect(poolSockets(dataDir).engineSocketPath);
  try {
    return await use(client);
  } finally {
    client.close();
  }
}
