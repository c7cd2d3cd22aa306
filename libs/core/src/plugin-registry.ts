/**
 * One plug-in shape for codecs and ciphers: a stage has a name ("zstd", "openpgp") and a
 * file extension ("zst", "pgp"); object names are built from the extensions, so a reader
 * finds the stages of an object from its name alone.
 */
export interface StagePlugin {
  readonly name: string;
  readonly extension: string;
}

export class PluginRegistry<T extends StagePlugin> {
  private readonly plugins: T[] = [];

  constructor(private readonly kind: string) {}

  register(plugin: T): void {
    if (this.plugins.some((p) => p.name === plugin.name)) {
      throw new Error(`${this.kind} "${plugin.name}" is registered twice`);
    }
    this.plugins.push(plugin);
  }

  byName(name: string): T | undefined {
    return this.plugins.find((p) => p.name === name);
  }

  byExtension(ext: string): T | undefined {
    const e = ext.replace(/^\./, '');
    return this.plugins.find((p) => p.extension === e);
  }

  names(): string[] {
    return this.plugins.map((p) => p.name);
  }
}
