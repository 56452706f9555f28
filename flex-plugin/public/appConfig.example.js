var appConfig = {
  pluginService: {
    enabled: true,
    url: '/plugins',
  },
  ytica: false,
  logLevel: 'info',
  showSupervisorDesktopView: true,
  // Used only when the plugin was built without FLEX_APP_MEDIA_RESOLVER_URL (in a real account, set it in the
  // Flex configuration's ui_attributes instead: see README).
  mediaResolver: {
    url: 'https://media.example.com',
  },
};
