module.exports = (config, { isProd, isDev, isTest }) => {
  /**
   * Customize the Jest by modifying the config object (used by `flex-plugin test`; this package's own tests
   * run with node's built-in runner, see package.json).
   */

  return config;
};
