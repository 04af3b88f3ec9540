# database = "postgres": several hangard replicas on one Azure Database for
# PostgreSQL flexible server, behind a Standard load balancer. Nothing here
# exists with the default database = "sqlite".
#
# - The flexible server has private access only: a delegated subnet in the
#   host VNet and a private DNS zone linked to it. TLS is required and
#   hangard checks the server's certificate (sslmode=verify-full, against
#   the image's system roots).
# - The URL with its generated password is a Key Vault secret, read by each
#   VM's identity at every start of hangard and handed to it as a file
#   (database.url_file), like the passphrase and the JWT secret that all
#   replicas share.
# - The load balancer sends HTTPS (and HTTP for the ACME challenge and the
#   redirect) to every VM whose hangard answers GET /readyz, and gives the
#   VMs their outbound address. Any replica takes webhooks, API calls and
#   runner callbacks; PostgreSQL decides which one drives each pool.

locals {
  pg_secret_names = {
    database_url    = "hangar-database-url"
    caddy_share_key = "hangar-caddy-share-key"
  }
  pg_admin_login = "hangar"
}

# --- The flexible server -----------------------------------------------------

resource "azurerm_subnet" "postgres" {
  count                = local.pg ? 1 : 0
  name                 = "postgres"
  resource_group_name  = azurerm_resource_group.hangar.name
  virtual_network_name = azurerm_virtual_network.hangar.name
  address_prefixes     = [var.postgres_address_space]

  delegation {
    name = "postgres-flexible"
    service_delegation {
      name    = "Microsoft.DBforPostgreSQL/flexibleServers"
      actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
  }
}

resource "azurerm_private_dns_zone" "postgres" {
  count               = local.pg ? 1 : 0
  name                = "${var.prefix}${local.suffix}.private.postgres.database.azure.com"
  resource_group_name = azurerm_resource_group.hangar.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "postgres" {
  count                 = local.pg ? 1 : 0
  name                  = "${var.prefix}-host"
  resource_group_name   = azurerm_resource_group.hangar.name
  private_dns_zone_name = azurerm_private_dns_zone.postgres[0].name
  virtual_network_id    = azurerm_virtual_network.hangar.id
  tags                  = local.tags
}

resource "random_password" "postgres" {
  count   = local.pg ? 1 : 0
  length  = 48
  special = false
}

resource "azurerm_postgresql_flexible_server" "hangar" {
  count                         = local.pg ? 1 : 0
  name                          = "${var.prefix}-pg-${local.suffix}"
  resource_group_name           = azurerm_resource_group.hangar.name
  location                      = azurerm_resource_group.hangar.location
  version                       = var.postgres_version
  sku_name                      = var.postgres_sku
  storage_mb                    = var.postgres_storage_mb
  zone                          = var.postgres_zone != "" ? var.postgres_zone : null
  delegated_subnet_id           = azurerm_subnet.postgres[0].id
  private_dns_zone_id           = azurerm_private_dns_zone.postgres[0].id
  public_network_access_enabled = false
  administrator_login           = local.pg_admin_login
  administrator_password        = random_password.postgres[0].result
  backup_retention_days         = var.postgres_backup_retention_days
  geo_redundant_backup_enabled  = var.postgres_geo_redundant_backup
  tags                          = local.tags

  dynamic "high_availability" {
    for_each = var.postgres_high_availability ? [1] : []
    content {
      mode                      = "ZoneRedundant"
      standby_availability_zone = var.postgres_standby_zone != "" ? var.postgres_standby_zone : null
    }
  }

  lifecycle {
    # Azure moves the primary to the standby's zone on a failover; that is
    # not a change to undo.
    ignore_changes = [zone, high_availability[0].standby_availability_zone]
    precondition {
      condition     = !var.postgres_high_availability || !startswith(var.postgres_sku, "B_")
      error_message = "Zone-redundant high availability needs a General Purpose or Memory Optimized SKU (postgres_sku GP_… or MO_…)."
    }
  }

  depends_on = [azurerm_private_dns_zone_virtual_network_link.postgres]
}

resource "azurerm_postgresql_flexible_server_database" "hangar" {
  count     = local.pg ? 1 : 0
  name      = "hangar"
  server_id = azurerm_postgresql_flexible_server.hangar[0].id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

# Connections: every replica keeps a small pool (and one LISTEN connection);
# the server's default max_connections for a D2ds is far above that.

resource "azurerm_key_vault_secret" "database_url" {
  count        = local.pg ? 1 : 0
  name         = local.pg_secret_names.database_url
  value        = "postgres://${local.pg_admin_login}:${random_password.postgres[0].result}@${azurerm_postgresql_flexible_server.hangar[0].fqdn}:5432/${azurerm_postgresql_flexible_server_database.hangar[0].name}?sslmode=verify-full"
  key_vault_id = azurerm_key_vault.hangar.id
  content_type = "text/plain"
  tags         = local.tags
  depends_on   = [time_sleep.key_vault_rbac]
}

# --- Caddy's shared storage ---------------------------------------------------

resource "azurerm_storage_share" "caddy" {
  count              = local.pg ? 1 : 0
  name               = "caddy"
  storage_account_id = azurerm_storage_account.backups.id
  quota              = 1
}

resource "azurerm_key_vault_secret" "caddy_share_key" {
  count        = local.pg ? 1 : 0
  name         = local.pg_secret_names.caddy_share_key
  value        = azurerm_storage_account.backups.primary_access_key
  key_vault_id = azurerm_key_vault.hangar.id
  content_type = "text/plain"
  tags         = local.tags
  depends_on   = [time_sleep.key_vault_rbac]
}

resource "azurerm_role_assignment" "identity_database_secrets" {
  for_each = local.pg ? {
    database_url    = azurerm_key_vault_secret.database_url[0].resource_versionless_id
    caddy_share_key = azurerm_key_vault_secret.caddy_share_key[0].resource_versionless_id
  } : {}
  scope                = each.value
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.hangar.principal_id
  principal_type       = "ServicePrincipal"
}

# --- Load balancer -------------------------------------------------------------

resource "azurerm_lb" "hangar" {
  count               = local.pg ? 1 : 0
  name                = "${var.prefix}-lb"
  resource_group_name = azurerm_resource_group.hangar.name
  location            = azurerm_resource_group.hangar.location
  sku                 = "Standard"
  tags                = local.tags

  frontend_ip_configuration {
    name                 = "public"
    public_ip_address_id = azurerm_public_ip.hangar.id
  }
}

resource "azurerm_lb_backend_address_pool" "hangar" {
  count           = local.pg ? 1 : 0
  name            = "hangard"
  loadbalancer_id = azurerm_lb.hangar[0].id
}

resource "azurerm_network_interface_backend_address_pool_association" "hangar" {
  count                   = local.pg ? var.host_count : 0
  network_interface_id    = azurerm_network_interface.hangar[count.index].id
  ip_configuration_name   = "primary"
  backend_address_pool_id = azurerm_lb_backend_address_pool.hangar[0].id
}

# A VM takes traffic only while its hangard is ready (its database is
# reachable): a replica cut off from PostgreSQL leaves the rotation.
resource "azurerm_lb_probe" "readyz" {
  count               = local.pg ? 1 : 0
  name                = "readyz"
  loadbalancer_id     = azurerm_lb.hangar[0].id
  protocol            = "Http"
  port                = 9997
  request_path        = "/readyz"
  interval_in_seconds = 5
  number_of_probes    = 2
}

resource "azurerm_lb_rule" "hangar" {
  for_each                       = local.pg ? { https = 443, http = 80 } : {}
  name                           = each.key
  loadbalancer_id                = azurerm_lb.hangar[0].id
  protocol                       = "Tcp"
  frontend_port                  = each.value
  backend_port                   = each.value
  frontend_ip_configuration_name = "public"
  backend_address_pool_ids       = [azurerm_lb_backend_address_pool.hangar[0].id]
  probe_id                       = azurerm_lb_probe.readyz[0].id
  # Webhooks and API calls are short; runner callbacks retry. No affinity
  # is needed: every replica answers every route.
  load_distribution       = "Default"
  idle_timeout_in_minutes = 4
  disable_outbound_snat   = true
}

# The VMs have no public IP of their own: they reach GitHub, Key Vault and
# the registry through the load balancer's address.
resource "azurerm_lb_outbound_rule" "hangar" {
  count                    = local.pg ? 1 : 0
  name                     = "outbound"
  loadbalancer_id          = azurerm_lb.hangar[0].id
  protocol                 = "All"
  backend_address_pool_id  = azurerm_lb_backend_address_pool.hangar[0].id
  allocated_outbound_ports = 8000
  idle_timeout_in_minutes  = 10

  frontend_ip_configuration {
    name = "public"
  }
}

# SSH to VM i on port 2201 + i of the public IP, from admin_source_addresses
# only (the host NSG's ssh rule).
resource "azurerm_lb_nat_rule" "ssh" {
  count                          = local.pg && length(var.admin_source_addresses) > 0 ? 1 : 0
  name                           = "ssh"
  resource_group_name            = azurerm_resource_group.hangar.name
  loadbalancer_id                = azurerm_lb.hangar[0].id
  protocol                       = "Tcp"
  frontend_port_start            = 2201
  frontend_port_end              = 2200 + var.host_count
  backend_port                   = 22
  backend_address_pool_id        = azurerm_lb_backend_address_pool.hangar[0].id
  frontend_ip_configuration_name = "public"
}
