# Hangar on Azure. Read README.md first; in short:
#
# - hangard runs in a container (deploy/Dockerfile) on one small Linux VM,
#   behind Caddy for TLS. Its SQLite database lives on a managed data disk
#   (local block storage: what SQLite's WAL mode needs; Azure Files is not),
#   with hourly online backups to Blob storage.
# - Or (database = "postgres") hangard runs on host_count VMs in different
#   zones, all replicas on one Azure Database for PostgreSQL flexible server
#   (private access, zone-redundant standby, point-in-time restore), behind
#   a Standard load balancer that sends traffic only to VMs whose hangard
#   answers /readyz. Caddy on every VM shares its certificates through an
#   Azure Files share (Caddy instances with one storage act as a cluster).
# - Runner VMs live in their own resource group and VNet. A user-assigned
#   managed identity may only manage VMs, NICs, public IPs and disks there.
# - Key Vault holds the generated secrets; the VM reads the two hangard needs
#   with its identity at every start and keeps them on a tmpfs.
# - Settings (hangard.toml, image, …) travel in the VM's user data, which
#   `terraform apply` updates in place; `systemctl restart hangard` applies them.

data "azurerm_client_config" "current" {}

# Globally unique names (Key Vault, storage, registry, DNS label).
resource "random_string" "suffix" {
  length  = 6
  upper   = false
  special = false
}

locals {
  suffix      = random_string.suffix.result
  rg_name     = var.resource_group_name != "" ? var.resource_group_name : var.prefix
  public_host = var.public_hostname != "" ? var.public_hostname : azurerm_public_ip.hangar.fqdn
  public_url  = "https://${local.public_host}"
  registry    = var.create_registry ? azurerm_container_registry.hangar[0].login_server : ""
  image       = var.hangar_image != "" ? var.hangar_image : "${local.registry}/hangar:${var.hangar_image_tag}"
  tags        = merge({ "app" = "hangar", "managed-by" = "terraform" }, var.tags)

  # Several replicas on PostgreSQL behind a load balancer, or one VM with
  # SQLite on its data disk.
  pg         = var.database == "postgres"
  host_zones = local.pg ? var.host_zones : []

  # What Hangar's Azure provider calls, and nothing else. The last three
  # only read the status of the provider's own long-running operations
  # (Azure-AsyncOperation / Location URLs under .../locations/...).
  runner_role_actions = concat([
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/virtualMachines/delete",
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/disks/delete",
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Network/networkInterfaces/write",
    "Microsoft.Network/networkInterfaces/delete",
    "Microsoft.Network/networkInterfaces/join/action",
    "Microsoft.Network/publicIPAddresses/read",
    "Microsoft.Network/publicIPAddresses/write",
    "Microsoft.Network/publicIPAddresses/delete",
    "Microsoft.Network/publicIPAddresses/join/action",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
    "Microsoft.Compute/locations/operations/read",
    "Microsoft.Network/locations/operations/read",
    "Microsoft.Network/locations/operationResults/read",
  ], var.extra_runner_role_actions)

  # Key Vault secret names. The VM's identity may read the first two only.
  secret_names = {
    passphrase     = "hangar-db-passphrase"
    jwt_secret     = "hangar-jwt-secret"
    admin_password = "hangar-admin-password"
    webhook_secret = "github-webhook-secret"
  }
}

resource "azurerm_resource_group" "hangar" {
  name     = local.rg_name
  location = var.location
  tags     = local.tags
}

# Only runner VMs (made by Hangar) and their network live here.
resource "azurerm_resource_group" "runners" {
  name     = var.runner_resource_group_name
  location = var.location
  tags     = local.tags
}

# --- Identity and its permissions --------------------------------------

resource "azurerm_user_assigned_identity" "hangar" {
  name                = "${var.prefix}-identity"
  resource_group_name = azurerm_resource_group.hangar.name
  location            = azurerm_resource_group.hangar.location
  tags                = local.tags
}

resource "azurerm_role_definition" "runner_provider" {
  name              = "Hangar runner provider (${azurerm_resource_group.runners.name}, ${local.suffix})"
  scope             = azurerm_resource_group.runners.id
  description       = "Hangar's Azure provider: create, list and delete runner VMs with their NICs, public IPs and OS disks in one resource group."
  assignable_scopes = [azurerm_resource_group.runners.id]

  permissions {
    actions     = local.runner_role_actions
    not_actions = []
  }
}

resource "azurerm_role_assignment" "runner_provider" {
  scope              = azurerm_resource_group.runners.id
  role_definition_id = azurerm_role_definition.runner_provider.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.hangar.principal_id
  principal_type     = "ServicePrincipal"
}

# --- Runner network ------------------------------------------------------

resource "azurerm_virtual_network" "runners" {
  name                = "${var.prefix}-runners"
  resource_group_name = azurerm_resource_group.runners.name
  location            = azurerm_resource_group.runners.location
  address_space       = [var.runner_address_space]
  tags                = local.tags
}

resource "azurerm_subnet" "runners" {
  name                 = "runners"
  resource_group_name  = azurerm_resource_group.runners.name
  virtual_network_name = azurerm_virtual_network.runners.name
  address_prefixes     = [var.runner_address_space]
  # With the NAT gateway, outbound traffic goes through it and nothing else.
  default_outbound_access_enabled = !var.runner_nat_gateway
}

# Runners run untrusted jobs: nothing may connect to them, not even another
# runner (Azure's default rules already refuse the internet; traffic the
# runners start, through the NAT gateway, is not affected).
resource "azurerm_network_security_group" "runners" {
  name                = "${var.prefix}-runners"
  resource_group_name = azurerm_resource_group.runners.name
  location            = azurerm_resource_group.runners.location
  tags                = local.tags

  security_rule {
    name                       = "deny-vnet-inbound"
    description                = "No runner accepts connections from another."
    priority                   = 4000
    direction                  = "Inbound"
    access                     = "Deny"
    protocol                   = "*"
    source_port_range          = "*"
    destination_port_range     = "*"
    source_address_prefix      = var.runner_address_space
    destination_address_prefix = "*"
  }
}

resource "azurerm_subnet_network_security_group_association" "runners" {
  subnet_id                 = azurerm_subnet.runners.id
  network_security_group_id = azurerm_network_security_group.runners.id
}

resource "azurerm_public_ip" "runners_nat" {
  count               = var.runner_nat_gateway ? 1 : 0
  name                = "${var.prefix}-runners-nat"
  resource_group_name = azurerm_resource_group.runners.name
  location            = azurerm_resource_group.runners.location
  allocation_method   = "Static"
  sku                 = "Standard"
  tags                = local.tags
}

resource "azurerm_nat_gateway" "runners" {
  count                   = var.runner_nat_gateway ? 1 : 0
  name                    = "${var.prefix}-runners"
  resource_group_name     = azurerm_resource_group.runners.name
  location                = azurerm_resource_group.runners.location
  sku_name                = "Standard"
  idle_timeout_in_minutes = 10
  tags                    = local.tags
}

resource "azurerm_nat_gateway_public_ip_association" "runners" {
  count                = var.runner_nat_gateway ? 1 : 0
  nat_gateway_id       = azurerm_nat_gateway.runners[0].id
  public_ip_address_id = azurerm_public_ip.runners_nat[0].id
}

resource "azurerm_subnet_nat_gateway_association" "runners" {
  count          = var.runner_nat_gateway ? 1 : 0
  subnet_id      = azurerm_subnet.runners.id
  nat_gateway_id = azurerm_nat_gateway.runners[0].id
}

# --- Key Vault -----------------------------------------------------------

resource "azurerm_key_vault" "hangar" {
  name                       = "${var.prefix}-kv-${local.suffix}"
  resource_group_name        = azurerm_resource_group.hangar.name
  location                   = azurerm_resource_group.hangar.location
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = var.key_vault_purge_protection
  soft_delete_retention_days = 90
  tags                       = local.tags
}

# Whoever runs Terraform writes the secrets.
resource "azurerm_role_assignment" "deployer_secrets" {
  scope                = azurerm_key_vault.hangar.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

# A new role assignment takes a while to reach Key Vault's data plane.
resource "time_sleep" "key_vault_rbac" {
  depends_on      = [azurerm_role_assignment.deployer_secrets]
  create_duration = "90s"
}

resource "random_password" "secret" {
  for_each = local.secret_names
  length   = each.key == "jwt_secret" ? 64 : 48
  special  = false
}

resource "azurerm_key_vault_secret" "generated" {
  for_each     = local.secret_names
  name         = each.value
  value        = random_password.secret[each.key].result
  key_vault_id = azurerm_key_vault.hangar.id
  content_type = "text/plain"
  tags         = local.tags
  depends_on   = [time_sleep.key_vault_rbac]
}

resource "azurerm_key_vault_secret" "github_pat" {
  count        = nonsensitive(var.github_pat != "") ? 1 : 0
  name         = "github-pat"
  value        = var.github_pat
  key_vault_id = azurerm_key_vault.hangar.id
  content_type = "text/plain"
  tags         = local.tags
  depends_on   = [time_sleep.key_vault_rbac]
}

resource "azurerm_key_vault_secret" "github_app_private_key" {
  count        = nonsensitive(var.github_app_private_key != "") ? 1 : 0
  name         = "github-app-private-key"
  value        = var.github_app_private_key
  key_vault_id = azurerm_key_vault.hangar.id
  content_type = "application/x-pem-file"
  tags         = local.tags
  depends_on   = [time_sleep.key_vault_rbac]
}

# hangard needs the database passphrase and the JWT secret, nothing else:
# GitHub credentials reach it through the API (first-run.sh) and are
# sealed in its database.
resource "azurerm_role_assignment" "identity_secrets" {
  for_each             = toset(["passphrase", "jwt_secret"])
  scope                = azurerm_key_vault_secret.generated[each.key].resource_versionless_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.hangar.principal_id
  principal_type       = "ServicePrincipal"
}

# --- Backups ---------------------------------------------------------------

resource "azurerm_storage_account" "backups" {
  name                            = "${var.prefix}bk${local.suffix}"
  resource_group_name             = azurerm_resource_group.hangar.name
  location                        = azurerm_resource_group.hangar.location
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = var.storage_replication_type
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  tags                            = local.tags

  blob_properties {
    # A deleted or overwritten backup can be undeleted for two weeks.
    delete_retention_policy {
      days = 14
    }
    container_delete_retention_policy {
      days = 14
    }
  }
}

resource "azurerm_storage_container" "backups" {
  name                  = "hangar-backups"
  storage_account_id    = azurerm_storage_account.backups.id
  container_access_type = "private"
}

resource "azurerm_storage_management_policy" "backups" {
  storage_account_id = azurerm_storage_account.backups.id

  rule {
    name    = "expire-backups"
    enabled = true
    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${azurerm_storage_container.backups.name}/"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.backup_retention_days
      }
    }
  }
}

resource "azurerm_role_assignment" "identity_backups" {
  scope                = "${azurerm_storage_account.backups.id}/blobServices/default/containers/${azurerm_storage_container.backups.name}"
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.hangar.principal_id
  principal_type       = "ServicePrincipal"
}

# --- Registry --------------------------------------------------------------

resource "azurerm_container_registry" "hangar" {
  count               = var.create_registry ? 1 : 0
  name                = "${var.prefix}${local.suffix}"
  resource_group_name = azurerm_resource_group.hangar.name
  location            = azurerm_resource_group.hangar.location
  sku                 = "Basic"
  admin_enabled       = false
  tags                = local.tags
}

resource "azurerm_role_assignment" "identity_pull" {
  count                = var.create_registry ? 1 : 0
  scope                = azurerm_container_registry.hangar[0].id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.hangar.principal_id
  principal_type       = "ServicePrincipal"
}

# --- Hangar's host -----------------------------------------------------------

resource "azurerm_virtual_network" "hangar" {
  name                = "${var.prefix}-host"
  resource_group_name = azurerm_resource_group.hangar.name
  location            = azurerm_resource_group.hangar.location
  address_space       = local.pg ? [var.hangar_address_space, var.postgres_address_space] : [var.hangar_address_space]
  tags                = local.tags
}

resource "azurerm_subnet" "hangar" {
  name                 = "host"
  resource_group_name  = azurerm_resource_group.hangar.name
  virtual_network_name = azurerm_virtual_network.hangar.name
  address_prefixes     = [var.hangar_address_space]
}

resource "azurerm_network_security_group" "hangar" {
  name                = "${var.prefix}-host"
  resource_group_name = azurerm_resource_group.hangar.name
  location            = azurerm_resource_group.hangar.location
  tags                = local.tags

  # GitHub's webhooks, the runners' metadata and callback calls, the CLI.
  security_rule {
    name                       = "https"
    priority                   = 100
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "443"
    source_address_prefix      = "Internet"
    destination_address_prefix = "*"
  }

  # Let's Encrypt's HTTP-01 challenge and the redirect to HTTPS.
  security_rule {
    name                       = "http"
    priority                   = 110
    direction                  = "Inbound"
    access                     = "Allow"
    protocol                   = "Tcp"
    source_port_range          = "*"
    destination_port_range     = "80"
    source_address_prefix      = "Internet"
    destination_address_prefix = "*"
  }

  # Behind the load balancer: its health probe reaches hangard's own port
  # (GET /readyz); nothing else in the VNet may, as it speaks plain HTTP.
  dynamic "security_rule" {
    for_each = local.pg ? [1] : []
    content {
      name                       = "lb-probe"
      priority                   = 130
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = "9997"
      source_address_prefix      = "AzureLoadBalancer"
      destination_address_prefix = "*"
    }
  }

  dynamic "security_rule" {
    for_each = local.pg ? [1] : []
    content {
      name                       = "no-plain-api"
      priority                   = 140
      direction                  = "Inbound"
      access                     = "Deny"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = "9997"
      source_address_prefix      = "*"
      destination_address_prefix = "*"
    }
  }

  dynamic "security_rule" {
    for_each = length(var.admin_source_addresses) > 0 ? [1] : []
    content {
      name                       = "ssh"
      priority                   = 120
      direction                  = "Inbound"
      access                     = "Allow"
      protocol                   = "Tcp"
      source_port_range          = "*"
      destination_port_range     = "22"
      source_address_prefixes    = var.admin_source_addresses
      destination_address_prefix = "*"
    }
  }
}

resource "azurerm_subnet_network_security_group_association" "hangar" {
  subnet_id                 = azurerm_subnet.hangar.id
  network_security_group_id = azurerm_network_security_group.hangar.id
}

resource "azurerm_public_ip" "hangar" {
  name                = "${var.prefix}-host"
  resource_group_name = azurerm_resource_group.hangar.name
  location            = azurerm_resource_group.hangar.location
  allocation_method   = "Static"
  sku                 = "Standard"
  domain_name_label   = "${var.prefix}-${local.suffix}"
  tags                = local.tags
}

# One VM ("<prefix>-host") with SQLite; "<prefix>-host-<i>" replicas with
# PostgreSQL. The public IP is the VM's own with SQLite, the load
# balancer's with PostgreSQL.
locals {
  host_names = [for i in range(var.host_count) : local.pg ? "${var.prefix}-host-${i}" : "${var.prefix}-host"]
}

resource "azurerm_network_interface" "hangar" {
  count               = var.host_count
  name                = local.host_names[count.index]
  resource_group_name = azurerm_resource_group.hangar.name
  location            = azurerm_resource_group.hangar.location
  tags                = local.tags

  ip_configuration {
    name                          = "primary"
    subnet_id                     = azurerm_subnet.hangar.id
    private_ip_address_allocation = "Dynamic"
    public_ip_address_id          = local.pg ? null : azurerm_public_ip.hangar.id
  }
}

moved {
  from = azurerm_network_interface.hangar
  to   = azurerm_network_interface.hangar[0]
}

# The database (SQLite). Separate from the VM, so replacing the VM keeps it.
resource "azurerm_managed_disk" "state" {
  count                = local.pg ? 0 : 1
  name                 = "${var.prefix}-state"
  resource_group_name  = azurerm_resource_group.hangar.name
  location             = azurerm_resource_group.hangar.location
  storage_account_type = var.data_disk_type
  create_option        = "Empty"
  disk_size_gb         = var.data_disk_size_gb
  tags                 = local.tags
}

moved {
  from = azurerm_managed_disk.state
  to   = azurerm_managed_disk.state[0]
}

locals {
  hangard_toml = templatefile("${path.module}/hangard.toml.tftpl", {
    public_url          = local.public_url
    provider_name       = var.provider_name
    subscription_id     = var.subscription_id
    resource_group      = azurerm_resource_group.runners.name
    location            = var.location
    subnet_id           = azurerm_subnet.runners.id
    public_ip           = var.runner_public_ip
    admin_username      = var.runner_admin_username
    ssh_public_key_file = var.runner_ssh_public_key != "" ? "/etc/hangar/runner.pub" : ""
    max_concurrency     = var.runner_max_concurrency
    identity_client_id  = azurerm_user_assigned_identity.hangar.client_id
    database            = var.database
  })

  # The VM's user data: read by hangar-host at every start of hangard.
  host_settings = {
    config                = local.hangard_toml
    image                 = local.image
    registry              = local.registry
    proxy_image           = var.proxy_image
    domain                = local.public_host
    identity_client_id    = azurerm_user_assigned_identity.hangar.client_id
    key_vault_uri         = azurerm_key_vault.hangar.vault_uri
    passphrase_secret     = local.secret_names.passphrase
    jwt_secret_secret     = local.secret_names.jwt_secret
    backup_url            = "${azurerm_storage_account.backups.primary_blob_endpoint}${azurerm_storage_container.backups.name}"
    runner_ssh_public_key = var.runner_ssh_public_key
    # PostgreSQL replicas: the database URL (with its password) from Key
    # Vault; Caddy's storage on the shared file share; hangard's port open
    # to the load balancer's probe.
    database            = var.database
    database_url_secret = local.pg ? local.pg_secret_names.database_url : ""
    caddy_share         = local.pg ? "//${azurerm_storage_account.backups.name}.file.core.windows.net/${azurerm_storage_share.caddy[0].name}" : ""
    caddy_share_user    = azurerm_storage_account.backups.name
    caddy_share_secret  = local.pg ? local.pg_secret_names.caddy_share_key : ""
    probe_port          = local.pg ? 9997 : 0
  }

  # The VM's custom data: the host's units and script (deploy/azure/vm/).
  # Changing these replaces the VM (the data disk is kept).
  vm_files = {
    "/usr/local/sbin/hangar-host"                = { mode = "0755", file = "hangar-host.sh" }
    "/etc/systemd/system/hangar-prepare.service" = { mode = "0644", file = "hangar-prepare.service" }
    "/etc/systemd/system/hangard.service"        = { mode = "0644", file = "hangard.service" }
    "/etc/systemd/system/hangar-proxy.service"   = { mode = "0644", file = "hangar-proxy.service" }
    "/etc/systemd/system/hangar-backup.service"  = { mode = "0644", file = "hangar-backup.service" }
    "/etc/systemd/system/hangar-backup.timer"    = { mode = "0644", file = "hangar-backup.timer" }
    "/etc/hangar-proxy/Caddyfile"                = { mode = "0644", file = "Caddyfile" }
  }
  cloud_init = "#cloud-config\n${yamlencode({
    package_update = true
    packages       = local.pg ? ["docker.io", "jq", "curl", "cifs-utils"] : ["docker.io", "sqlite3", "jq", "curl"]
    write_files = [for dest, f in local.vm_files : {
      path        = dest
      permissions = f.mode
      encoding    = "b64"
      content     = filebase64("${path.module}/vm/${f.file}")
    }]
    runcmd = [
      ["systemctl", "daemon-reload"],
      # --no-block: the data disk is attached only after the VM exists.
      # The flexible server backs itself up (point-in-time restore): no
      # SQLite backup timer with PostgreSQL.
      concat(["systemctl", "enable", "--now", "--no-block", "hangar-prepare.service", "hangard.service", "hangar-proxy.service"], local.pg ? [] : ["hangar-backup.timer"]),
    ]
  })}"
}

resource "azurerm_linux_virtual_machine" "hangar" {
  count                           = var.host_count
  name                            = local.host_names[count.index]
  zone                            = length(local.host_zones) > 0 ? local.host_zones[count.index % length(local.host_zones)] : null
  resource_group_name             = azurerm_resource_group.hangar.name
  location                        = azurerm_resource_group.hangar.location
  size                            = var.vm_size
  admin_username                  = var.admin_username
  disable_password_authentication = true
  network_interface_ids           = [azurerm_network_interface.hangar[count.index].id]
  secure_boot_enabled             = true
  vtpm_enabled                    = true
  custom_data                     = base64encode(local.cloud_init)
  user_data                       = base64encode(jsonencode(local.host_settings))
  tags                            = local.tags

  admin_ssh_key {
    username   = var.admin_username
    public_key = var.admin_ssh_public_key
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.hangar.id]
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "StandardSSD_LRS"
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }

  # Serial console and boot screenshots, in a storage account Azure manages.
  boot_diagnostics {}

  lifecycle {
    precondition {
      condition     = var.create_registry || var.hangar_image != ""
      error_message = "Set hangar_image when create_registry is false."
    }
    precondition {
      condition     = local.pg || var.host_count == 1
      error_message = "host_count > 1 needs database = \"postgres\": SQLite has one writer, on one VM."
    }
  }

  # Boot only once the identity may do what the host asks of it (Azure
  # still takes a few minutes to apply the grants; the units retry).
  depends_on = [
    azurerm_role_assignment.identity_secrets,
    azurerm_role_assignment.identity_backups,
    azurerm_role_assignment.identity_pull,
    azurerm_role_assignment.runner_provider,
    azurerm_role_assignment.identity_database_secrets,
    azurerm_postgresql_flexible_server_database.hangar,
  ]
}

moved {
  from = azurerm_linux_virtual_machine.hangar
  to   = azurerm_linux_virtual_machine.hangar[0]
}

resource "azurerm_virtual_machine_data_disk_attachment" "state" {
  count              = local.pg ? 0 : 1
  managed_disk_id    = azurerm_managed_disk.state[0].id
  virtual_machine_id = azurerm_linux_virtual_machine.hangar[0].id
  lun                = 0
  caching            = "ReadOnly"
}

moved {
  from = azurerm_virtual_machine_data_disk_attachment.state
  to   = azurerm_virtual_machine_data_disk_attachment.state[0]
}
