const path = require('path');

/**
 * The drilldown handler is static/flex-drilldown.js, the file the resolver itself serves (one source of truth).
 * flex-plugin-scripts only bundles and transpiles src/: let exactly that one file through both gates.
 * (Babel is needed: webpack 4's parser does not read `?.`.)
 */
const HANDLER = path.resolve(__dirname, '..', 'static', 'flex-drilldown.js');

module.exports = (config, { isProd, isDev, isTest }) => {
  const scope = (config.resolve.plugins || []).find((p) => p.constructor && p.constructor.name === 'ModuleScopePlugin');
  if (!scope || !(scope.allowedFiles instanceof Set)) {
    throw new Error('webpack.config.js: ModuleScopePlugin not found; cannot allow static/flex-drilldown.js');
  }
  scope.allowedFiles.add(HANDLER);

  let babel = 0;
  for (const rule of config.module.rules) {
    for (const loader of rule.oneOf || []) {
      if (typeof loader.loader === 'string' && loader.loader.includes('babel-loader')) {
        loader.include = [].concat(loader.include, HANDLER);
        babel += 1;
      }
    }
  }
  if (babel !== 1) throw new Error(`webpack.config.js: expected one babel-loader rule, found ${babel}`);
  return config;
};
