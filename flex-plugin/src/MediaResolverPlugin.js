import { FlexPlugin } from '@twilio/flex-plugin';

import { installMediaResolver } from './install.js';

const PLUGIN_NAME = 'MediaResolverPlugin';

export default class MediaResolverPlugin extends FlexPlugin {
  constructor() {
    super(PLUGIN_NAME);
  }

  /**
   * Installs the drilldown handler: `/d/` links of the resolver are opened with the user's Flex token.
   *
   * @param flex { typeof import('@twilio/flex-ui') }
   * @param manager { import('@twilio/flex-ui').Manager }
   */
  async init(flex, manager) {
    // FLEX_APP_* variables are replaced at build time by flex-plugin-scripts (from the environment or .env).
    installMediaResolver(flex, manager, { buildTimeUrl: process.env.FLEX_APP_MEDIA_RESOLVER_URL });
  }
}
