import * as FlexPlugin from '@twilio/flex-plugin';

import MediaResolverPlugin from './MediaResolverPlugin.js';

FlexPlugin.loadPlugin(MediaResolverPlugin);
